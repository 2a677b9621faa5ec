//! A TCP proxy between the daemon and the broker whose link can be cut (all
//! connections dropped, new ones refused) and restored: a real network outage
//! in front of a real broker (as in the uplink's tests).

use crate::HilError;
use tokio::sync::watch;

pub struct Proxy {
    pub port: u16,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target`.
    pub async fn start(target: String) -> Result<Proxy, HilError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| HilError::Io { what, source }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io("proxy bind"))?;
        let port = listener.local_addr().map_err(io("proxy address"))?.port();
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
        Ok(Proxy { port, up, task })
    }

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
