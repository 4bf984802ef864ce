use super::*;

fn exec(timeout_ms: Option<u64>, stdin: Option<&str>) -> Request {
    Request {
        id: 7,
        op: Op::Exec {
            argv: vec!["true".into()],
            timeout_ms,
            stdin: stdin.map(Into::into),
        },
    }
}

#[test]
fn frames_round_trip_and_reject_truncation_and_huge_lengths() {
    let req = exec(Some(500), None);
    let mut buf = Vec::new();
    write_frame(&mut buf, &req).unwrap();
    write_frame(
        &mut buf,
        &Request {
            id: 8,
            op: Op::Ping,
        },
    )
    .unwrap();
    let json = br#"{"id":7,"op":"exec","argv":["true"],"timeout_ms":500}"#;
    assert_eq!(&buf[..4], &(json.len() as u32).to_be_bytes());
    assert_eq!(&buf[4..4 + json.len()], json);
    let mut r = &buf[..];
    let a = Request::from_json(&read_frame(&mut r).unwrap().unwrap()).unwrap();
    let b = Request::from_json(&read_frame(&mut r).unwrap().unwrap()).unwrap();
    assert_eq!(a, req);
    assert_eq!(b.op, Op::Ping);
    assert!(read_frame(&mut r).unwrap().is_none());

    for cut in [&buf[..10], &buf[..2]] {
        let mut cut = cut;
        assert_eq!(
            read_frame(&mut cut).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
    let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
    assert_eq!(
        read_frame(&mut &huge[..]).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn every_request_reads_back_as_written() {
    let requests = [
        exec(None, None),
        exec(Some(1), Some("aGk=")),
        Request {
            id: u64::MAX,
            op: Op::Exec {
                argv: vec!["sh".into(), "-c".into(), "echo \"$x\"\n\ttab é".into()],
                timeout_ms: None,
                stdin: None,
            },
        },
        Request {
            id: 1,
            op: Op::Write {
                path: "/etc/x".into(),
                mode: Some(0o600),
                data: "eA==".into(),
            },
        },
        Request {
            id: 2,
            op: Op::Write {
                path: "/etc/y".into(),
                mode: None,
                data: String::new(),
            },
        },
        Request {
            id: 3,
            op: Op::Read { path: "/x".into() },
        },
        Request {
            id: 4,
            op: Op::Ping,
        },
    ];
    for r in requests {
        let text = r.to_json();
        assert_eq!(Request::from_json(text.as_bytes()).unwrap(), r, "{text}");
    }
}

#[test]
fn wire_format_of_requests_and_responses() {
    let r = Request::from_json(br#"{"id":3,"op":"ping"}"#).unwrap();
    assert_eq!(
        r,
        Request {
            id: 3,
            op: Op::Ping
        }
    );
    let w = Request::from_json(
        br#"{"id":4,"op":"write","path":"/x","mode":384,"data":"eA==","extra":[1]}"#,
    )
    .unwrap();
    assert_eq!(
        w.op,
        Op::Write {
            path: "/x".into(),
            mode: Some(0o600),
            data: "eA==".into()
        }
    );
    let e = Request::from_json(br#"{"id":1,"op":"format-disk"}"#).unwrap_err();
    assert!(e.contains("format-disk"), "{e}");
    let e = Request::from_json(br#"{"id":1,"op":"exec"}"#).unwrap_err();
    assert!(e.contains("\"argv\""), "{e}");
    let e = Request::from_json(br#"{"id":-1,"op":"ping"}"#).unwrap_err();
    assert!(e.contains("\"id\""), "{e}");
    assert!(Request::from_json(br#"[1]"#).is_err());

    let exec = Response {
        id: 9,
        ok: true,
        exit: Some(0),
        stdout: Some(String::new()),
        stderr: Some(String::new()),
        ..Response::default()
    };
    assert_eq!(
        exec.to_json(),
        r#"{"id":9,"ok":true,"exit":0,"signal":null,"stdout":"","stderr":""}"#
    );
    assert_eq!(
        Response::failure(2, "no").to_json(),
        r#"{"id":2,"ok":false,"signal":null,"error":"no"}"#
    );
}

#[test]
fn every_response_field_reads_back() {
    let full = Response {
        id: 5,
        ok: true,
        exit: Some(-1),
        signal: Some(9),
        stdout: Some("b3V0".into()),
        stderr: Some("ZXJy".into()),
        data: Some("ZA==".into()),
        boot_id: Some("0b9c1c6e-8f52-4d1a-9d1e-3c2a1f0e7d6b".into()),
        uptime: Some(12.34),
        error: Some("line\n\"quoted\"".into()),
    };
    let text = full.to_json();
    assert_eq!(Response::from_json(text.as_bytes()).unwrap(), full);
    let e = Response::from_json(br#"{"id":1}"#).unwrap_err();
    assert!(e.contains("\"ok\""), "{e}");
    let e = Response::from_json(br#"{"id":1,"ok":true,"exit":"0"}"#).unwrap_err();
    assert!(e.contains("\"exit\""), "{e}");
}
