#![allow(clippy::unwrap_used)]
use slipway::assemble::tree::Tree;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut t = Tree::new();
    for sub in ["boot", "usr/lib/modules"] {
        let mut sub_t = Tree::new();
        slipway::assemble::overlay::apply(&mut sub_t, &std::path::Path::new(&args[1]).join(sub), 0).unwrap();
        for (p, e) in sub_t.iter() { t.put(&format!("{sub}/{p}"), e.clone()).unwrap(); }
    }
    let k = slipway::kernel::find(&t).unwrap();
    let reqs: Vec<String> = args[2..].to_vec();
    let now = std::time::Instant::now();
    let plan = slipway::kernel::plan(&t, &k, &reqs).unwrap();
    println!("plan {:?}", now.elapsed());
    for m in &plan.keep { println!("{} {} deps={:?} pre={:?} post={:?} why={:?}", m.name, m.size, m.deps, m.pre, m.post, m.why); }
    println!("builtin {:?}", plan.builtin_hits.iter().map(|b| &b.name).collect::<Vec<_>>());
    println!("notes {:?}", plan.notes);
    println!("kept {} {} of {} {}", plan.keep.len(), plan.kept_bytes(), plan.total_count, plan.total_bytes);
    let now = std::time::Instant::now();
    let r = slipway::kernel::prune(&mut t, &k, &plan, 0).unwrap();
    println!("prune {:?} {}", now.elapsed(), r.summary());
    let order = plan.load_order(&["storage".into(), "root".into(), "var".into()]).unwrap();
    println!("order {:?}", order.iter().map(|m| &m.name).collect::<Vec<_>>());
}
