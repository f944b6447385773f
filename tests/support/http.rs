//! The integration tests' one HTTP harness: a real axum server on 127.0.0.1 and a real
//! HTTP/1.1 client.

use std::net::SocketAddr;

use axum::Router;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

/// A server running an app on a loopback port. Dropping it stops it at once (open
/// connections included); [`stop`](Server::stop) stops it gracefully.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Starts `app` on a free port.
    pub async fn start(app: Router) -> Server {
        Self::start_on("127.0.0.1:0".parse().unwrap(), app).await
    }

    /// Starts `app` on `addr`.
    pub async fn start_on(addr: SocketAddr, app: Router) -> Server {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
        });
        Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Leaves the server running until the test's runtime ends; returns its address.
    pub fn detach(mut self) -> SocketAddr {
        std::mem::forget(self.stop.take());
        self.task.take();
        self.addr
    }

    /// Stops accepting, waits for in-flight requests.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `req` and returns the response with its body read to a string.
pub async fn send(client: &HttpClient, req: Request<Empty<Bytes>>) -> (Response<()>, String) {
    let res = client.request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        Response::from_parts(parts, ()),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

pub fn get(url: &str) -> http::request::Builder {
    Request::get(url)
}
