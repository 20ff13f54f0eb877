//! Header limits over real TCP: a request whose header section is too
//! large, or that has too many fields, is refused with 431 before any
//! layer sees it; a normal one is served.

mod common;

use common::{config, start};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Sends `request` as raw bytes and returns the status line of the answer
/// (the request is written by a task of its own, so that an answer sent
/// before the server read everything is still seen).
async fn status_line(addr: &str, request: String) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The server may close before it read it all: not an error here.
        let _ = write.write_all(request.as_bytes()).await;
        write
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match read.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            Err(error) => {
                assert!(
                    !answer.is_empty(),
                    "the connection failed before any answer: {error}"
                );
                break;
            }
        }
    }
    drop(writer.await);
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_owned()
}

fn get(headers: &str) -> String {
    format!("GET /health HTTP/1.1\r\nhost: hasivu.test\r\n{headers}connection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_or_too_many_headers_get_431_and_normal_requests_200() {
    let app = start(config()).await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    assert_eq!(status_line(&addr, get("")).await, "HTTP/1.1 200 OK");
    // Large cookies are fine: 16 KiB of header.
    let cookie = format!("cookie: session={}\r\n", "c".repeat(16 * 1024));
    assert_eq!(status_line(&addr, get(&cookie)).await, "HTTP/1.1 200 OK");

    // 200 KB in one header: over the 32 KiB header section.
    let huge = format!("x-huge: {}\r\n", "a".repeat(200 * 1024));
    assert_eq!(
        status_line(&addr, get(&huge)).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // 1000 small headers (12 KB): over the 100 fields allowed.
    let many: String = (0..1000).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    assert_eq!(
        status_line(&addr, get(&many)).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );

    // The server is none the worse for it.
    assert_eq!(status_line(&addr, get("")).await, "HTTP/1.1 200 OK");
    app.stop().await;
}
