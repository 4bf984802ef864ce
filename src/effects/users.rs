//! System accounts: what `adduser`, `useradd`, `addgroup`, `groupadd` and
//! `systemd-sysusers` would have written to `/etc/passwd` and friends.
//!
//! Consumes base-passwd's `passwd.master`/`group.master`, maintainer scripts and
//! `sysusers.d` files; produces [`AccountRequest`]s, applies them to [`Accounts`] and
//! renders `passwd`, `group`, `shadow` and `gshadow`.
//!
//! ID allocation rule (one rule for every source, so the result depends only on the
//! order of requests): ids for system accounts come from Debian Policy 9.2.2's
//! dynamically allocated system range 100-999, searched upward like `adduser
//! --system` does. When a user gets a group of its own, the lowest id free as both
//! uid and gid is taken, so `uid == gid` as on a freshly installed system; if no such
//! id exists the two are allocated independently. systemd-sysusers would search
//! downward from 999; slipway deliberately does not copy that, so that all accounts
//! of an image follow a single rule.
//!
//! Requests are idempotent like `adduser`: an existing user or group is kept as is.
//! New accounts are locked (`!` in `shadow`/`gshadow`); base-passwd entries keep the
//! `*` of the master files.

use anyhow::{bail, Context, Result};

use super::shell::{self, Word};

/// Lowest id of the dynamically allocated system range (Debian Policy 9.2.2).
pub const FIRST_SYSTEM_ID: u32 = 100;
/// Highest id of the dynamically allocated system range.
pub const LAST_SYSTEM_ID: u32 = 999;
/// `nogroup`, the primary group of `adduser --system` users without `--group`.
pub const NOGROUP_GID: u32 = 65534;
/// Home of system users when the request names none (adduser >= 3.122 default).
pub const DEFAULT_HOME: &str = "/nonexistent";
/// Shell of system users when the request names none.
pub const DEFAULT_SHELL: &str = "/usr/sbin/nologin";

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
    /// Password field of `shadow`: `*` for base-passwd entries, `!` for created ones.
    pub password: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
    /// Password field of `gshadow`: `*` for base-passwd entries, `!` for created ones.
    pub password: String,
}

/// The account database of an image under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    users: Vec<User>,
    groups: Vec<Group>,
}

/// One thing a script or sysusers file asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountRequest {
    /// Create a user unless it exists.
    User {
        name: String,
        /// Explicit uid; `None` allocates one.
        uid: Option<u32>,
        system: bool,
        /// Primary group by name (must exist unless `create_group`).
        group: Option<String>,
        /// Primary group by number (sysusers `uid:gid`, `useradd -g 100`).
        gid: Option<u32>,
        /// `None`: [`DEFAULT_HOME`].
        home: Option<String>,
        /// `None`: [`DEFAULT_SHELL`].
        shell: Option<String>,
        gecos: Option<String>,
        /// Create a group named like the user and make it the primary group.
        create_group: bool,
    },
    /// Create a group unless it exists.
    Group {
        name: String,
        gid: Option<u32>,
        system: bool,
    },
    /// Add `user` to the supplementary members of `group`.
    Member { user: String, group: String },
}

impl AccountRequest {
    fn user(name: &str) -> AccountRequest {
        AccountRequest::User {
            name: name.to_string(),
            uid: None,
            system: false,
            group: None,
            gid: None,
            home: None,
            shell: None,
            gecos: None,
            create_group: false,
        }
    }
}

fn parse_id(s: &str, what: &str) -> Result<u32> {
    s.parse::<u32>()
        .with_context(|| format!("{what}: {s:?} is not a numeric id (expected 0-4294967295)"))
}

impl Accounts {
    /// Reads base-passwd's `passwd.master` and `group.master`
    /// (`/usr/share/base-passwd/`), the starting point of every Debian system.
    pub fn from_base_passwd(passwd_master: &str, group_master: &str) -> Result<Accounts> {
        let mut acc = Accounts::default();
        for (n, line) in group_master.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 4 {
                bail!(
                    "group.master line {}: expected 4 colon-separated fields (name:password:gid:members), found {}",
                    n + 1,
                    f.len()
                );
            }
            let gid = parse_id(f[2], &format!("group.master line {}: gid", n + 1))?;
            acc.groups.push(Group {
                name: f[0].to_string(),
                gid,
                members: split_members(f[3]),
                password: f[1].to_string(),
            });
        }
        for (n, line) in passwd_master.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 7 {
                bail!(
                    "passwd.master line {}: expected 7 colon-separated fields (name:password:uid:gid:gecos:home:shell), found {}",
                    n + 1,
                    f.len()
                );
            }
            acc.users.push(User {
                name: f[0].to_string(),
                uid: parse_id(f[2], &format!("passwd.master line {}: uid", n + 1))?,
                gid: parse_id(f[3], &format!("passwd.master line {}: gid", n + 1))?,
                gecos: f[4].to_string(),
                home: f[5].to_string(),
                shell: f[6].to_string(),
                password: f[1].to_string(),
            });
        }
        Ok(acc)
    }

    /// The users, in `/etc/passwd` order.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// The groups, in `/etc/group` order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Looks up a user by name.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Looks up a group by name.
    pub fn group_by_name(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    fn uid_used(&self, id: u32) -> bool {
        self.users.iter().any(|u| u.uid == id)
    }

    fn gid_used(&self, id: u32) -> bool {
        self.groups.iter().any(|g| g.gid == id)
    }

    fn free_uid(&self) -> Result<u32> {
        (FIRST_SYSTEM_ID..=LAST_SYSTEM_ID)
            .find(|&i| !self.uid_used(i))
            .context("no free system uid left in 100-999")
    }

    fn free_gid(&self) -> Result<u32> {
        (FIRST_SYSTEM_ID..=LAST_SYSTEM_ID)
            .find(|&i| !self.gid_used(i))
            .context("no free system gid left in 100-999")
    }

    fn add_group(&mut self, name: &str, gid: u32) {
        self.groups.push(Group {
            name: name.to_string(),
            gid,
            members: Vec::new(),
            password: "!".to_string(),
        });
    }

    /// Performs one request. Existing users and groups are kept unchanged (like
    /// `adduser` on an existing system user); an explicit id that is already taken
    /// by another account, or a primary group that does not exist, is an error.
    pub fn apply(&mut self, req: &AccountRequest) -> Result<()> {
        match req {
            AccountRequest::Group { name, gid, .. } => {
                check_name(name)?;
                if self.group_by_name(name).is_some() {
                    return Ok(());
                }
                let gid = match gid {
                    Some(g) if self.gid_used(*g) => {
                        bail!("group {name}: gid {g} is already used by another group")
                    }
                    Some(g) => *g,
                    None => self
                        .free_gid()
                        .with_context(|| format!("allocating gid for group {name}"))?,
                };
                self.add_group(name, gid);
            }
            AccountRequest::Member { user, group } => {
                if self.user(user).is_none() {
                    bail!("adding {user} to group {group}: user {user} does not exist");
                }
                let Some(g) = self.groups.iter_mut().find(|g| &g.name == group) else {
                    bail!("adding {user} to group {group}: group {group} does not exist");
                };
                if !g.members.contains(user) {
                    g.members.push(user.clone());
                }
            }
            AccountRequest::User {
                name,
                uid,
                group,
                gid,
                home,
                shell,
                gecos,
                create_group,
                ..
            } => {
                check_name(name)?;
                for (what, v) in [("gecos", gecos), ("home", home), ("shell", shell)] {
                    check_field(name, what, v.as_deref())?;
                }
                if self.user(name).is_some() {
                    return Ok(());
                }
                if let Some(u) = uid {
                    if self.uid_used(*u) {
                        bail!("user {name}: uid {u} is already used by another user");
                    }
                }
                let (uid, primary) = if *create_group && group.is_none() && gid.is_none() {
                    if let Some(g) = self.group_by_name(name) {
                        // The group exists already (e.g. created by an earlier
                        // `addgroup`): join it, as adduser --group does.
                        let g = g.gid;
                        (self.pick_uid(*uid, Some(g))?, g)
                    } else {
                        let (u, g) = match uid {
                            Some(u) if !self.gid_used(*u) => (*u, *u),
                            Some(u) => (*u, self.free_gid()?),
                            None => match (FIRST_SYSTEM_ID..=LAST_SYSTEM_ID)
                                .find(|&i| !self.uid_used(i) && !self.gid_used(i))
                            {
                                Some(i) => (i, i),
                                None => (self.free_uid()?, self.free_gid()?),
                            },
                        };
                        self.add_group(name, g);
                        (u, g)
                    }
                } else {
                    let g = if let Some(g) = gid {
                        if !self.gid_used(*g) {
                            bail!("user {name}: primary gid {g} does not exist");
                        }
                        *g
                    } else if let Some(gname) = group {
                        match self.group_by_name(gname) {
                            Some(g) => g.gid,
                            None => bail!("user {name}: primary group {gname} does not exist"),
                        }
                    } else {
                        NOGROUP_GID
                    };
                    (self.pick_uid(*uid, None)?, g)
                };
                self.users.push(User {
                    name: name.clone(),
                    uid,
                    gid: primary,
                    gecos: gecos.clone().unwrap_or_default(),
                    home: home.clone().unwrap_or_else(|| DEFAULT_HOME.to_string()),
                    shell: shell.clone().unwrap_or_else(|| DEFAULT_SHELL.to_string()),
                    password: "!".to_string(),
                });
            }
        }
        Ok(())
    }

    /// An explicit uid, else the gid of the user's own group if free as a uid, else
    /// the first free one.
    fn pick_uid(&self, uid: Option<u32>, prefer: Option<u32>) -> Result<u32> {
        match (uid, prefer) {
            (Some(u), _) => Ok(u),
            (None, Some(p)) if !self.uid_used(p) => Ok(p),
            _ => self.free_uid(),
        }
    }

    /// `/etc/passwd` (passwd(5)); passwords live in `shadow`, so the field is `x`.
    pub fn passwd(&self) -> String {
        self.users
            .iter()
            .map(|u| {
                format!(
                    "{}:x:{}:{}:{}:{}:{}\n",
                    u.name, u.uid, u.gid, u.gecos, u.home, u.shell
                )
            })
            .collect()
    }

    /// `/etc/group` (group(5)).
    pub fn group(&self) -> String {
        self.groups
            .iter()
            .map(|g| format!("{}:x:{}:{}\n", g.name, g.gid, g.members.join(",")))
            .collect()
    }

    /// `/etc/shadow` (shadow(5)) with every account locked. `last_change_day` is the
    /// day count since 1970-01-01 of the last password change; derive it from
    /// `SOURCE_DATE_EPOCH` with [`days_since_epoch`], never from the clock.
    pub fn shadow(&self, last_change_day: u64) -> String {
        self.users
            .iter()
            .map(|u| {
                format!(
                    "{}:{}:{}:0:99999:7:::\n",
                    u.name, u.password, last_change_day
                )
            })
            .collect()
    }

    /// `/etc/gshadow` (gshadow(5)): no group passwords, no administrators.
    pub fn gshadow(&self) -> String {
        self.groups
            .iter()
            .map(|g| format!("{}:{}::{}\n", g.name, g.password, g.members.join(",")))
            .collect()
    }
}

/// The day number shadow(5) expects, from a `SOURCE_DATE_EPOCH` in seconds.
pub fn days_since_epoch(source_date_epoch: u64) -> u64 {
    source_date_epoch / 86_400
}

fn split_members(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

/// passwd(5) fields go verbatim into a colon-separated, line-per-entry file: a ':' or a
/// newline would add fields or entries (a uid-0 line from a GECOS, say).
fn check_field(user: &str, what: &str, v: Option<&str>) -> Result<()> {
    if let Some(v) = v.filter(|v| v.contains(':') || v.chars().any(char::is_control)) {
        bail!("user {user}: {what} {v:?} would corrupt /etc/passwd (no ':', newline or control characters)");
    }
    Ok(())
}

/// Names go verbatim into colon-separated files: refuse what would corrupt them.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('-')
        || name
            .chars()
            .any(|c| c == ':' || c == ',' || c.is_whitespace() || c.is_control() || c == '/')
    {
        bail!("account name {name:?} is not valid (no ':', ',', '/', whitespace, leading '-')");
    }
    Ok(())
}

/// Parses a maintainer script; see [`parse_script_report`]. Lines that could not be
/// read literally are dropped.
pub fn parse_script(script: &str) -> Vec<AccountRequest> {
    parse_script_report(script).0
}

/// Finds account commands in a maintainer script: `adduser`, `addgroup`, `useradd`,
/// `groupadd`, `usermod -a -G` and `gpasswd -a`, anywhere in the script (inside
/// `if` blocks, `case` arms, functions, after `||`/`&&`). Returns the requests in
/// script order and, separately, the source of each such command that could not be
/// read literally (a `$VAR` where a name or value belongs, an unknown option),
/// prefixed with its line number.
pub fn parse_script_report(script: &str) -> (Vec<AccountRequest>, Vec<String>) {
    let mut reqs = Vec::new();
    let mut unparsed = Vec::new();
    for cmd in shell::commands(script) {
        let words = shell::command_words(&cmd);
        let Some(first) = words.first() else { continue };
        let name = first.text.rsplit('/').next().unwrap_or_default();
        let args = &words[1..];
        let res = match name {
            "adduser" | "addgroup" if !first.dynamic => Some(parse_adduser(name, args)),
            "useradd" if !first.dynamic => Some(parse_useradd(args)),
            "groupadd" if !first.dynamic => Some(parse_groupadd(args)),
            "usermod" if !first.dynamic => Some(parse_usermod(args)),
            "gpasswd" if !first.dynamic => Some(parse_gpasswd(args)),
            _ => None,
        };
        match res {
            Some(Ok(mut r)) => reqs.append(&mut r),
            Some(Err(e)) => unparsed.push(format!("line {}: {}: {e:#}", cmd.line, cmd.raw)),
            None => {}
        }
    }
    (reqs, unparsed)
}

/// The literal text of a word, or an error naming the variable.
fn lit(w: &Word) -> Result<String> {
    if w.dynamic {
        bail!("{} is only known at run time", w.text);
    }
    Ok(w.text.clone())
}

/// Splits `--opt=value` into `--opt` and an inline value.
fn split_long(t: &str) -> (&str, Option<&str>) {
    match t.split_once('=') {
        Some((o, v)) if t.starts_with("--") => (o, Some(v)),
        _ => (t, None),
    }
}

struct Args<'a> {
    words: &'a [Word],
    i: usize,
}

impl<'a> Args<'a> {
    fn value(&mut self, opt: &str, inline: Option<&str>) -> Result<String> {
        if let Some(v) = inline {
            if v.contains('$') || v.contains('`') {
                bail!("value of {opt} ({v}) is only known at run time");
            }
            return Ok(v.to_string());
        }
        self.i += 1;
        match self.words.get(self.i) {
            Some(w) => lit(w).with_context(|| format!("value of {opt}")),
            None => bail!("{opt} needs a value"),
        }
    }
}

fn parse_adduser(cmd: &str, words: &[Word]) -> Result<Vec<AccountRequest>> {
    let mut a = Args { words, i: 0 };
    let (mut system, mut group_flag) = (false, cmd == "addgroup");
    let (mut home, mut shell, mut gecos, mut ingroup) = (None, None, None, None);
    let (mut uid, mut gid) = (None, None);
    let mut pos: Vec<String> = Vec::new();
    while a.i < words.len() {
        let w = &words[a.i];
        let (opt, inline) = split_long(&w.text);
        if w.text.starts_with('-') && !w.dynamic {
            match opt {
                "--system" => system = true,
                "--group" => group_flag = true,
                "--quiet"
                | "-q"
                | "--no-create-home"
                | "--disabled-password"
                | "--disabled-login"
                | "--force-badname"
                | "--allow-badname"
                | "--allow-bad-names"
                | "--allow-all-names"
                | "--debug"
                | "--verbose"
                | "--add-extra-groups"
                | "--add_extra_groups"
                | "--encrypt-home"
                | "--no-preserve-home" => {}
                "--home" => home = Some(a.value(opt, inline)?),
                "--shell" => shell = Some(a.value(opt, inline)?),
                "--gecos" | "--comment" => gecos = Some(a.value(opt, inline)?),
                "--ingroup" => ingroup = Some(a.value(opt, inline)?),
                "--uid" => uid = Some(parse_id(&a.value(opt, inline)?, "--uid")?),
                "--gid" => gid = Some(parse_id(&a.value(opt, inline)?, "--gid")?),
                "--conf" | "--firstuid" | "--lastuid" | "--firstgid" | "--lastgid" | "--key"
                | "--extrausers" => {
                    a.value(opt, inline)?;
                }
                _ => bail!("unknown {cmd} option {opt}"),
            }
        } else {
            pos.push(lit(w).context("account name")?);
        }
        a.i += 1;
    }
    match pos.as_slice() {
        // `adduser USER GROUP` / `addgroup USER GROUP`: membership.
        [user, group] if !system => Ok(vec![AccountRequest::Member {
            user: user.clone(),
            group: group.clone(),
        }]),
        [name] if group_flag && (cmd == "addgroup" || !system) => Ok(vec![AccountRequest::Group {
            name: name.clone(),
            gid,
            system,
        }]),
        [name] => {
            let mut r = AccountRequest::user(name);
            if let AccountRequest::User {
                uid: u,
                system: s,
                group: g,
                gid: gi,
                home: h,
                shell: sh,
                gecos: gc,
                create_group,
                ..
            } = &mut r
            {
                *u = uid;
                *s = system;
                *h = home;
                *sh = shell;
                *gc = gecos;
                if let Some(ig) = ingroup {
                    *g = Some(ig);
                } else if let Some(x) = gid {
                    *gi = Some(x);
                } else if group_flag || !system {
                    // `--system --group`: own group. A non-system adduser also gets
                    // its own group (USERGROUPS=yes in adduser.conf).
                    *create_group = true;
                }
            }
            Ok(vec![r])
        }
        [] => bail!("no account name given"),
        _ => bail!(
            "expected one account name (or USER GROUP), found {}",
            pos.join(" ")
        ),
    }
}

/// Expands bundled short options (`-rM` -> `-r -M`) for useradd/groupadd/usermod.
fn short_flags(t: &str) -> Vec<String> {
    if t.starts_with('-') && !t.starts_with("--") && t.len() > 2 {
        t[1..].chars().map(|c| format!("-{c}")).collect()
    } else {
        vec![t.to_string()]
    }
}

/// Walks the words of a shadow-utils command (useradd, groupadd, usermod): each option,
/// bundled short flags split and `--long=value` split, goes to `on_opt` (which takes its
/// value from the [`Args`]); the literal positional arguments are returned in order.
fn walk_options<'a>(
    words: &'a [Word],
    positional: &str,
    mut on_opt: impl FnMut(&str, Option<&str>, &mut Args<'a>) -> Result<()>,
) -> Result<Vec<String>> {
    let mut a = Args { words, i: 0 };
    let mut pos = Vec::new();
    while a.i < words.len() {
        let w = &words[a.i];
        if w.text.starts_with('-') && !w.dynamic {
            // A bundled group like `-rs SHELL` takes its value after the bundle.
            for f in short_flags(&w.text) {
                let (opt, inline) = split_long(&f);
                on_opt(opt, inline, &mut a)?;
            }
        } else {
            pos.push(lit(w).with_context(|| positional.to_string())?);
        }
        a.i += 1;
    }
    Ok(pos)
}

/// The one positional argument of a command, or an error.
fn one_name(pos: Vec<String>, what: &str) -> Result<String> {
    let mut it = pos.into_iter();
    match (it.next(), it.next()) {
        (Some(n), None) => Ok(n),
        (None, _) => bail!("no {what} given"),
        (Some(_), Some(extra)) => bail!("unexpected argument {extra}"),
    }
}

fn parse_useradd(words: &[Word]) -> Result<Vec<AccountRequest>> {
    let (mut uid, mut group, mut gid, mut home, mut shell, mut gecos) =
        (None, None, None, None, None, None);
    let (mut system, mut user_group, mut extra) = (false, true, Vec::new());
    let pos = walk_options(words, "account name", |opt, inline, a| {
        match opt {
            "-r" | "--system" => system = true,
            "-M" | "--no-create-home" | "-m" | "--create-home" | "-l" | "--no-log-init" | "-o"
            | "--non-unique" => {}
            "-N" | "--no-user-group" => user_group = false,
            "-U" | "--user-group" => user_group = true,
            "-u" | "--uid" => uid = Some(parse_id(&a.value(opt, inline)?, opt)?),
            "-g" | "--gid" => {
                let v = a.value(opt, inline)?;
                match v.parse::<u32>() {
                    Ok(n) => gid = Some(n),
                    Err(_) => group = Some(v),
                }
            }
            "-G" | "--groups" => {
                extra = a
                    .value(opt, inline)?
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "-d" | "--home-dir" | "--home" => home = Some(a.value(opt, inline)?),
            "-s" | "--shell" => shell = Some(a.value(opt, inline)?),
            "-c" | "--comment" => gecos = Some(a.value(opt, inline)?),
            "-K" | "--key" | "-p" | "--password" | "-e" | "--expiredate" | "-f" | "--inactive"
            | "-k" | "--skel" | "-R" | "--root" | "-P" | "--prefix" => {
                a.value(opt, inline)?;
            }
            _ => bail!("unknown useradd option {opt}"),
        }
        Ok(())
    })?;
    let name = one_name(pos, "account name")?;
    let create_group = user_group && group.is_none() && gid.is_none();
    let mut out = vec![AccountRequest::User {
        name: name.clone(),
        uid,
        system,
        group,
        gid,
        home,
        shell,
        gecos,
        create_group,
    }];
    for g in extra.into_iter().filter(|g| !g.is_empty()) {
        out.push(AccountRequest::Member {
            user: name.clone(),
            group: g,
        });
    }
    Ok(out)
}

fn parse_groupadd(words: &[Word]) -> Result<Vec<AccountRequest>> {
    let (mut gid, mut system) = (None, false);
    let pos = walk_options(words, "group name", |opt, inline, a| {
        match opt {
            "-r" | "--system" => system = true,
            "-f" | "--force" | "-o" | "--non-unique" => {}
            "-g" | "--gid" => gid = Some(parse_id(&a.value(opt, inline)?, opt)?),
            "-K" | "--key" | "-p" | "--password" | "-R" | "--root" | "-P" | "--prefix" | "-U"
            | "--users" => {
                a.value(opt, inline)?;
            }
            _ => bail!("unknown groupadd option {opt}"),
        }
        Ok(())
    })?;
    let name = one_name(pos, "group name")?;
    Ok(vec![AccountRequest::Group { name, gid, system }])
}

/// `usermod -a -G g1,g2 user`: memberships only; other changes are reported.
fn parse_usermod(words: &[Word]) -> Result<Vec<AccountRequest>> {
    let (mut append, mut groups) = (false, Vec::new());
    let pos = walk_options(words, "user name", |opt, inline, a| {
        match opt {
            "-a" | "--append" => append = true,
            "-G" | "--groups" => {
                groups = a
                    .value(opt, inline)?
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            _ => bail!("usermod option {opt} is not supported (only -a -G)"),
        }
        Ok(())
    })?;
    let user = one_name(pos, "user name")?;
    if !append {
        bail!("usermod -G without -a replaces all groups; not supported");
    }
    Ok(groups
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|group| AccountRequest::Member {
            user: user.clone(),
            group,
        })
        .collect())
}

/// `gpasswd -a USER GROUP`.
fn parse_gpasswd(words: &[Word]) -> Result<Vec<AccountRequest>> {
    match words {
        [f, u, g] if f.text == "-a" || f.text == "--add" => Ok(vec![AccountRequest::Member {
            user: lit(u).context("user name")?,
            group: lit(g).context("group name")?,
        }]),
        _ => bail!("only `gpasswd -a USER GROUP` is supported"),
    }
}

/// Parses a sysusers.d(5) file. Supported: `u`, `u!`, `g`, `m`; `r` (ranges) is
/// ignored. Errors name the line and what was expected.
pub fn parse_sysusers(text: &str) -> Result<Vec<AccountRequest>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let ln = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f = sysusers_fields(line).with_context(|| format!("sysusers line {ln}"))?;
        let get = |i: usize| -> Option<String> { f.get(i).filter(|s| s.as_str() != "-").cloned() };
        let ty = f[0].as_str();
        if ty == "r" {
            // Ranges only steer sysusers' own allocator; slipway has one rule.
            continue;
        }
        let Some(name) = get(1) else {
            bail!("sysusers line {ln}: {ty} needs a name");
        };
        if name.contains('%') {
            bail!("sysusers line {ln}: specifiers in names ({name}) are not supported");
        }
        match ty {
            "u" | "u!" => {
                let id = get(2);
                let (uid, gid, group) = match id.as_deref() {
                    None => (None, None, None),
                    Some(s) if s.starts_with('/') => {
                        bail!("sysusers line {ln}: taking ids from a file ({s}) is not supported")
                    }
                    Some(s) => {
                        let (u, g) = match s.split_once(':') {
                            Some((u, g)) => (u, Some(g)),
                            None => (s, None),
                        };
                        let uid = if u == "-" {
                            None
                        } else {
                            Some(parse_id(u, &format!("sysusers line {ln}: uid"))?)
                        };
                        match g {
                            None => (uid, None, None),
                            Some(g) => match g.parse::<u32>() {
                                Ok(n) => (uid, Some(n), None),
                                Err(_) => (uid, None, Some(g.to_string())),
                            },
                        }
                    }
                };
                let create_group = gid.is_none() && group.is_none();
                out.push(AccountRequest::User {
                    name,
                    uid,
                    system: true,
                    group,
                    gid,
                    gecos: get(3),
                    // sysusers.d(5): the home directory defaults to "/".
                    home: Some(get(4).unwrap_or_else(|| "/".to_string())),
                    shell: get(5),
                    create_group,
                });
            }
            "g" => {
                let gid = match get(2) {
                    None => None,
                    Some(s) if s.starts_with('/') => {
                        bail!("sysusers line {ln}: taking ids from a file ({s}) is not supported")
                    }
                    Some(s) => Some(parse_id(&s, &format!("sysusers line {ln}: gid"))?),
                };
                out.push(AccountRequest::Group {
                    name,
                    gid,
                    system: true,
                });
            }
            "m" => {
                let Some(group) = get(2) else {
                    bail!("sysusers line {ln}: m needs a user and a group");
                };
                out.push(AccountRequest::Member { user: name, group });
            }
            "r" => {}
            other => bail!("sysusers line {ln}: unknown type {other:?} (expected u, g, m or r)"),
        }
    }
    Ok(out)
}

/// Splits a sysusers line into fields; double-quoted fields may contain spaces.
fn sysusers_fields(line: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let mut field = String::new();
        if c == '"' || c == '\'' {
            chars.next();
            let mut closed = false;
            while let Some(n) = chars.next() {
                if n == c {
                    closed = true;
                    break;
                }
                if n == '\\' {
                    if let Some(e) = chars.next() {
                        field.push(e);
                    }
                    continue;
                }
                field.push(n);
            }
            if !closed {
                bail!("unterminated quote");
            }
        } else {
            while let Some(&n) = chars.peek() {
                if n.is_whitespace() {
                    break;
                }
                field.push(n);
                chars.next();
            }
        }
        out.push(field);
    }
    if out.is_empty() {
        bail!("empty line");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:*:0:0:root:/root:/bin/bash\n\
daemon:*:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
_apt:*:42:65534::/nonexistent:/usr/sbin/nologin\n\
nobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:*:0:\ndaemon:*:1:\nadm:*:4:\nusers:*:100:\nnogroup:*:65534:\n";

    fn base() -> Accounts {
        Accounts::from_base_passwd(PASSWD, GROUP).unwrap()
    }

    // In the form of bookworm's dbus-system-bus-common and chrony postinsts.
    const SCRIPT: &str = r#"#!/bin/sh
set -e
MESSAGEUSER=messagebus
if [ "$1" = configure ]; then
    in_sysroot adduser --system \
            --quiet \
            --home /nonexistent \
            --no-create-home \
            --disabled-password \
            --group "$MESSAGEUSER"
fi
case "$1" in
    configure)
        adduser --force-badname \
                --system \
                --group \
                --quiet \
                --gecos "Chrony daemon" \
                --home /var/lib/chrony \
                --no-create-home _chrony
        addgroup --system --gid 998 kvm || true
        adduser _chrony kvm >/dev/null
        ;;
esac
if ! getent passwd sshd >/dev/null; then
    adduser --quiet --system --no-create-home --home /run/sshd --shell /usr/sbin/nologin sshd
fi
useradd -r -g nogroup -d /var/lib/foo -s /bin/false -c "Foo Daemon" -u 150 foo
groupadd -r -g 151 foogrp
usermod -aG foogrp,adm foo
"#;

    #[test]
    fn parses_common_script_forms() {
        let (reqs, unparsed) = parse_script_report(SCRIPT);
        assert_eq!(unparsed.len(), 1, "{unparsed:?}");
        assert!(
            unparsed[0].starts_with("line 5: in_sysroot adduser --system"),
            "{}",
            unparsed[0]
        );
        assert!(unparsed[0].contains("$MESSAGEUSER"));
        assert_eq!(
            reqs[0],
            AccountRequest::User {
                name: "_chrony".into(),
                uid: None,
                system: true,
                group: None,
                gid: None,
                home: Some("/var/lib/chrony".into()),
                shell: None,
                gecos: Some("Chrony daemon".into()),
                create_group: true,
            }
        );
        assert_eq!(
            reqs[1],
            AccountRequest::Group {
                name: "kvm".into(),
                gid: Some(998),
                system: true
            }
        );
        assert_eq!(
            reqs[2],
            AccountRequest::Member {
                user: "_chrony".into(),
                group: "kvm".into()
            }
        );
        assert!(
            matches!(&reqs[3], AccountRequest::User { name, create_group: false, home: Some(h), .. } if name == "sshd" && h == "/run/sshd")
        );
        assert_eq!(
            reqs[4],
            AccountRequest::User {
                name: "foo".into(),
                uid: Some(150),
                system: true,
                group: Some("nogroup".into()),
                gid: None,
                home: Some("/var/lib/foo".into()),
                shell: Some("/bin/false".into()),
                gecos: Some("Foo Daemon".into()),
                create_group: false,
            }
        );
        assert_eq!(reqs.len(), 8);

        let mut acc = base();
        for r in &reqs {
            acc.apply(r).unwrap();
        }
        let passwd = acc.passwd();
        assert!(
            passwd.contains("_chrony:x:101:101:Chrony daemon:/var/lib/chrony:/usr/sbin/nologin\n"),
            "{passwd}"
        );
        assert!(
            passwd.contains("sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"),
            "{passwd}"
        );
        assert!(passwd.contains("foo:x:150:65534:Foo Daemon:/var/lib/foo:/bin/false\n"));
        let group = acc.group();
        assert!(group.contains("kvm:x:998:_chrony\n"), "{group}");
        assert!(group.contains("adm:x:4:foo\n"));
        assert!(group.contains("foogrp:x:151:foo\n"));
        assert!(acc
            .shadow(19_000)
            .starts_with("root:*:19000:0:99999:7:::\n"));
        assert!(acc.shadow(19_000).contains("sshd:!:19000:0:99999:7:::\n"));
        assert!(acc.gshadow().contains("kvm:!::_chrony\n"));
    }

    #[test]
    fn apply_is_idempotent_and_deterministic() {
        let reqs = parse_script(
            "adduser --system --group a\nadduser --system --group a\naddgroup --system b\n",
        );
        let mut x = base();
        let mut y = base();
        for r in &reqs {
            x.apply(r).unwrap();
            y.apply(r).unwrap();
        }
        assert_eq!(x, y);
        // gid 100 is `users`, so the first id free as both uid and gid is 101.
        assert_eq!(x.user("a").unwrap().uid, 101);
        assert_eq!(x.user("a").unwrap().gid, 101);
        assert_eq!(x.group_by_name("b").unwrap().gid, 102);
        assert_eq!(x.users().len(), 5);
    }

    #[test]
    fn apply_errors_name_the_problem() {
        let mut acc = base();
        let e = acc
            .apply(&AccountRequest::Member {
                user: "root".into(),
                group: "nope".into(),
            })
            .unwrap_err();
        assert!(e.to_string().contains("group nope does not exist"));
        let e = acc
            .apply(&AccountRequest::Group {
                name: "x".into(),
                gid: Some(0),
                system: true,
            })
            .unwrap_err();
        assert!(e.to_string().contains("gid 0 is already used"));
        assert!(acc.apply(&AccountRequest::user("bad:name")).is_err());
        assert!(Accounts::from_base_passwd("root:*:0:0", "")
            .unwrap_err()
            .to_string()
            .contains("passwd.master line 1"));
    }

    #[test]
    fn sysusers_forms() {
        // In the form of systemd's basic.conf, openssh-server.conf and timesyncd's.
        let text = r#"
# comment
g adm        4     -
g nogroup    65534 -
u root       0       - /root                /bin/bash
u sync       4:65534 - /bin                 /bin/sync
u sshd -:nogroup "sshd user" /run/sshd
u! systemd-timesync - "systemd Time Synchronization"
g input  -
m sshd adm
r - 500-900
"#;
        let reqs = parse_sysusers(text).unwrap();
        assert_eq!(reqs.len(), 8);
        assert_eq!(
            reqs[4],
            AccountRequest::User {
                name: "sshd".into(),
                uid: None,
                system: true,
                group: Some("nogroup".into()),
                gid: None,
                home: Some("/run/sshd".into()),
                shell: None,
                gecos: Some("sshd user".into()),
                create_group: false,
            }
        );
        let mut acc = Accounts::default();
        for r in &reqs {
            acc.apply(r).unwrap();
        }
        let p = acc.passwd();
        assert!(p.contains("root:x:0:0::/root:/bin/bash\n"), "{p}");
        assert!(p.contains("sync:x:4:65534::/bin:/bin/sync\n"));
        assert!(
            p.contains("sshd:x:100:65534:sshd user:/run/sshd:/usr/sbin/nologin\n"),
            "{p}"
        );
        assert!(
            p.contains(
                "systemd-timesync:x:101:101:systemd Time Synchronization:/:/usr/sbin/nologin\n"
            ),
            "{p}"
        );
        assert!(acc.group().contains("input:x:100:\n"));
        assert!(acc.group().contains("adm:x:4:sshd\n"));

        let e = parse_sysusers("u x 12a\n").unwrap_err();
        assert!(format!("{e:#}").contains("sysusers line 1: uid"), "{e:#}");
        assert!(parse_sysusers("q x\n").is_err());
        assert!(parse_sysusers("u x - \"open\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = parse_script_report(&s);
            let _ = parse_sysusers(&s);
            let _ = Accounts::from_base_passwd(&s, &s);
        }

        #[test]
        fn script_like_input_never_panics(s in "(adduser|useradd|groupadd|usermod|[ '\"\\\\$()|;&<>\\n=-]|--[a-z]+|[a-z0-9]+){0,40}") {
            let (reqs, _) = parse_script_report(&s);
            let mut acc = Accounts::default();
            for r in &reqs {
                let _ = acc.apply(r);
            }
        }
    }
}
