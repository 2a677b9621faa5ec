//! A network cable that can be pulled: a TCP proxy on 127.0.0.1 whose link
//! can be cut (every connection dropped, new ones refused) and restored. Put
//! between the daemon and a broker or device, it gives a real outage in
//! front of a real peer.

use tokio::sync::watch;

pub struct Cable {
    /// The port to connect to instead of the target's.
    pub port: u16,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cable {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target` (`host:port`).
    pub async fn start(target: String) -> std::io::Result<Cable> {
        let listener = crate::listen_on(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let port = listener.local_addr()?.port();
        let (up, _) = watch::channel(true);
        let up2 = up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !*up2.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut = up2.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Cable { port, up, task })
    }

    /// Pulls the cable: open connections drop, new ones are refused.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }
}
