//! Real round-trip time between the runner and a host, for the latency
//! group and the benchmark.
//!
//! `tc netem` would be the natural tool, but this machine's kernel has no
//! `sch_netem` (`tc qdisc add dev lo root netem` answers "Specified qdisc
//! kind is unknown", and there are no modules to load). So the delay is put
//! in the path instead: a TCP relay on 127.0.0.1 in front of a host's SSH
//! port that holds every chunk, in each direction, for `one_way` before
//! passing it on. Order is kept and nothing is throttled, so a request and
//! its answer cost one full RTT, as on a real link. Every byte the action
//! exchanges with the host rides the SSH connection (commands, the Docker
//! API, probes), so all of it pays the RTT.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A delaying relay on its own thread and runtime (usable from sync and
/// async tests alike); stops when dropped.
pub struct DelayProxy {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl DelayProxy {
    /// Relays 127.0.0.1:<port> to `target`, `one_way` late each way
    /// (RTT = 2 × `one_way`).
    pub fn start(target: SocketAddr, one_way: Duration) -> DelayProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let accept = async {
                    while let Ok((client, _)) = listener.accept().await {
                        tokio::spawn(async move {
                            let Ok(server) = TcpStream::connect(target).await else { return };
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let (cr, cw) = client.into_split();
                            let (sr, sw) = server.into_split();
                            tokio::spawn(delay_line(cr, sw, one_way));
                            tokio::spawn(delay_line(sr, cw, one_way));
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime here ends every relayed connection.
        });
        DelayProxy { port, stop: Some(stop) }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Copies `from` to `to`, each chunk `delay` after it arrived.
async fn delay_line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() || to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                // The end, delivered in order after what came before it.
                let _ = tx.send((Instant::now() + delay, Vec::new()));
                break;
            }
            Ok(n) => {
                if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    let _ = writer.await;
}

/// `known_hosts` text that also pins host `addr`'s key for
/// `[127.0.0.1]:port` (the relay's address, as the action dials it).
pub fn known_hosts_via(known_hosts: &str, addr: &str, port: u16) -> String {
    let mut out = known_hosts.to_string();
    for line in known_hosts.lines() {
        let mut fields = line.split_whitespace();
        if fields.next().is_some_and(|h| h.split(',').any(|h| h == addr)) {
            let rest: Vec<&str> = fields.collect();
            out.push_str(&format!("\n[127.0.0.1]:{port} {}\n", rest.join(" ")));
        }
    }
    out
}
