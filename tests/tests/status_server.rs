//! The status/metrics endpoint is not a way in: only GET, bounded connections (idle clients
//! cannot lock a scraper out), a read timeout and a request size limit. No root needed.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use xvip::api::{
    document::Status,
    server::{MAX_CONNECTIONS, MAX_REQUEST_BYTES, REQUEST_TIMEOUT, StatusSource},
};

async fn server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let source: StatusSource = Arc::new(|| Status {
        interface: "eth0".into(),
        ..Default::default()
    });
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let task = xvip::api::server::serve(addr, source).await.unwrap();
    (addr, task)
}

/// Sends `req` and reads the whole answer (the server closes after one).
async fn exchange(addr: SocketAddr, req: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn methods_other_than_get_are_refused_with_405() {
    let (addr, task) = server().await;
    for method in ["POST", "PUT", "DELETE", "HEAD", "OPTIONS", "CONNECT"] {
        let req = format!("{method} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        let r = exchange(addr, req.as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 405 "), "{method}: {r}");
        assert!(r.contains("Allow: GET"), "{method}: {r}");
        assert!(!r.contains("xvip_"), "{method} got metrics: {r}");
    }
    let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    let r = exchange(addr, b"garbage\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    task.abort();
}

#[tokio::test]
async fn an_oversize_request_is_refused_with_431() {
    let (addr, task) = server().await;
    let mut req = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    req.resize(2 * MAX_REQUEST_BYTES, b'a');
    let r = exchange(addr, &req).await;
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    // Just under the limit is served.
    let mut req = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    req.resize(MAX_REQUEST_BYTES - 8, b'a');
    req.extend_from_slice(b"\r\n\r\n");
    let r = exchange(addr, &req).await;
    assert!(r.starts_with("HTTP/1.1 200 "), "{}", &r[..r.len().min(200)]);
    task.abort();
}

#[tokio::test]
async fn a_request_in_several_pieces_is_served_and_a_silent_client_is_timed_out() {
    let (addr, task) = server().await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    for piece in [
        &b"GET /hea"[..],
        b"lthz HTTP/1.1\r\n",
        b"Host: x\r\n",
        b"\r\n",
    ] {
        c.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200 ") && out.ends_with("ok\n"),
        "{out}"
    );

    let t = Instant::now();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), idle.read_to_string(&mut out))
        .await
        .expect("the server closed the idle connection")
        .ok();
    let took = t.elapsed();
    println!("silent connection closed after {took:?}: {out:?}");
    assert!(
        took >= REQUEST_TIMEOUT - Duration::from_millis(100),
        "{took:?}"
    );
    assert!(took < REQUEST_TIMEOUT + Duration::from_secs(2), "{took:?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_metrics_for_a_new_client() {
    // 1000 client sockets in this process: lift a 1024 soft limit up to the hard one.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < 4096 {
            lim.rlim_cur = lim.rlim_max.min(4096);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let (addr, task) = server().await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let t = Instant::now();
    let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let took = t.elapsed();
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    assert!(r.contains("xvip_"), "{r}");
    // Bounded: the server let go of all but the newest MAX_CONNECTIONS idle ones.
    let mut closed = 0;
    let mut set = tokio::task::JoinSet::new();
    for mut c in idle {
        set.spawn(async move {
            let mut b = [0u8; 64];
            matches!(
                tokio::time::timeout(Duration::from_millis(300), c.read(&mut b)).await,
                Ok(Ok(0) | Err(_))
            )
        });
    }
    while let Some(r) = set.join_next().await {
        closed += usize::from(r.unwrap());
    }
    println!(
        "/metrics served in {:.1} ms behind 1000 idle connections; {closed} of them closed by the server (at most {MAX_CONNECTIONS} kept)",
        took.as_secs_f64() * 1e3
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(closed >= 1000 - MAX_CONNECTIONS, "{closed}");
    task.abort();
}
