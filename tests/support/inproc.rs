//! An in-process gateway over the real request path, for measurements.
//!
//! [`spawn_gateway`] serves `api::server::serve` -> `Gateway::handle` -> the forwarder, exactly
//! as `faasgate serve` does, but over a route table the caller publishes into directly
//! ([`publish`]) instead of one a provider fills: that makes 10,000 functions cheap to
//! deploy and keeps the measurement on the data plane. [`spawn_upstream`] is a fast upstream
//! (a fixed GET body, POST bodies echoed) and [`Client`] a keep-alive HTTP/1.1 client.
//!
//! Shared through `#[path]` by `tests/alloc_budget.rs`, `benches/dataplane.rs`,
//! `loadtest/upstream.rs`, `loadtest/scalegate.rs` and `fuzz/fuzz_targets/differential.rs`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use faasgate::api::metrics::exposition::Exposition;
use faasgate::api::Gateway;
use faasgate::control::provider::{LogQuery, LogStream};
use faasgate::control::{Provider, ProviderError};
use faasgate::dataplane::forward::{ForwardConfig, Forwarder};
use faasgate::dataplane::{FunctionHandle, FunctionState, Replica, Routes};
use faasgate::model::names::FunctionKey;
use faasgate::model::types::{FunctionDeployment, FunctionStatus, ProviderInfo, VersionInfo};
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The upstream's answer to a GET.
pub const GET_BODY: &[u8] = b"Hello, world\n";

/// A provider that owns nothing: functions are published into the routes by the caller.
pub struct NoProvider;

/// A running in-process gateway; dropping it does not stop it, [`InProc::stop`] does.
pub struct InProc {
    pub addr: SocketAddr,
    pub routes: Arc<Routes>,
    stop: oneshot::Sender<()>,
}

/// One keep-alive client connection.
pub struct Client {
    sender: client::SendRequest<Full<Bytes>>,
}

// === impl NoProvider ===

fn unsupported() -> ProviderError {
    ProviderError::Backend("in-process gateway: functions are published into its routes".into())
}

#[async_trait]
impl Provider for NoProvider {
    async fn deploy(&self, _: FunctionDeployment) -> Result<(), ProviderError> {
        Err(unsupported())
    }
    async fn update(&self, _: FunctionDeployment) -> Result<(), ProviderError> {
        Err(unsupported())
    }
    async fn delete(&self, _: &FunctionKey) -> Result<(), ProviderError> {
        Err(unsupported())
    }
    async fn scale(&self, _: &FunctionKey, _: u64) -> Result<(), ProviderError> {
        Err(unsupported())
    }
    async fn list(&self, _: &str) -> Result<Vec<FunctionStatus>, ProviderError> {
        Ok(Vec::new())
    }
    async fn status(&self, key: &FunctionKey) -> Result<FunctionStatus, ProviderError> {
        Err(ProviderError::NotFound(key.clone()))
    }
    async fn namespaces(&self) -> Result<Vec<String>, ProviderError> {
        Ok(vec![faasgate::model::names::DEFAULT_NAMESPACE.into()])
    }
    async fn logs(&self, _: LogQuery) -> Result<LogStream, ProviderError> {
        Err(unsupported())
    }
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            provider: "faasgate".into(),
            orchestration: "in-process".into(),
            version: VersionInfo {
                commit_message: String::new(),
                sha: faasgate::SHA.into(),
                release: faasgate::RELEASE.into(),
            },
        }
    }
    async fn shutdown(&self) {}
}

// === impl InProc ===

impl InProc {
    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}

/// The gateway the real server would build, over `routes`, without auth.
pub fn gateway(routes: Arc<Routes>) -> Arc<Gateway> {
    gateway_with_config(
        routes,
        ForwardConfig {
            hold_timeout: Duration::from_secs(5),
            ..ForwardConfig::default()
        },
    )
}

/// [`gateway`] with the forwarder's settings given.
pub fn gateway_with_config(routes: Arc<Routes>, config: ForwardConfig) -> Arc<Gateway> {
    let (cold_tx, _cold_rx) = tokio::sync::mpsc::unbounded_channel();
    let scaling = faasgate::control::scaler::Scaling::new(Default::default());
    Arc::new(Gateway {
        routes: routes.clone(),
        forwarder: Forwarder::new(config, cold_tx),
        provider: Arc::new(NoProvider),
        auth: None,
        exposition: Exposition::new(routes),
        max_body_bytes: 4 << 20,
        series: Arc::new(faasgate::api::metrics::series::Series::new()),
        events: scaling.events.clone(),
        scaling,
        byte_loop: true,
        async_calls: None,
    })
}

/// Binds `listen` and serves the gateway over `routes` on the current runtime.
pub async fn spawn_gateway_on(listen: SocketAddr, routes: Arc<Routes>) -> InProc {
    spawn_gateway_with(listen, routes, true).await
}

/// [`spawn_gateway_on`], with invocations served by the byte-level loop or (`false`) by hyper.
#[allow(dead_code)] // not every test binary that includes this file compares the two
pub async fn spawn_gateway_with(
    listen: SocketAddr,
    routes: Arc<Routes>,
    byte_loop: bool,
) -> InProc {
    let listener = TcpListener::bind(listen).await.expect("bind gateway");
    let addr = listener.local_addr().expect("gateway address");
    let mut gw = gateway(routes.clone());
    Arc::get_mut(&mut gw).expect("not shared yet").byte_loop = byte_loop;
    let stop = serve_until_stopped(listener, gw, Duration::from_secs(60), || ());
    InProc { addr, routes, stop }
}

/// Serves `gw` on `listener` (as `faasgate serve` does, with `read_timeout`) until the
/// returned sender fires or is dropped, then runs `on_stop`.
fn serve_until_stopped(
    listener: TcpListener,
    gw: Arc<Gateway>,
    read_timeout: Duration,
    on_stop: impl FnOnce() + Send + 'static,
) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(faasgate::api::server::serve(
        listener,
        gw,
        read_timeout,
        Duration::from_secs(1),
        async move {
            let _ = stopped.await;
            on_stop();
        },
    ));
    stop
}

/// A gateway on `127.0.0.1:0` with an async queue: the embedded store in `dir` holding at
/// most `bound` calls, bodies up to `max_body`, and (when `deliver`) its dispatcher
/// delivering through the gateway itself (as `faasgate serve` wires them); invocations and
/// async calls served by the byte loop or (`false`) by hyper. Returns the store too.
pub async fn spawn_gateway_async(
    routes: Arc<Routes>,
    byte_loop: bool,
    dir: &std::path::Path,
    max_body: usize,
    bound: u64,
    deliver: bool,
) -> (InProc, Arc<dyn faasgate::queue::CallStore>) {
    use faasgate::queue::{
        AsyncStats, CallStore, Callbacks, DispatchConfig, Dispatcher, EmbeddedStore,
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("gateway address");
    let store: Arc<dyn CallStore> = EmbeddedStore::open(dir, bound).expect("open the store");
    let dispatcher = Dispatcher::new(
        store.clone(),
        routes.clone(),
        addr,
        DispatchConfig {
            retry_wait: Duration::from_millis(100),
            retry_max_wait: Duration::from_millis(200),
            ..DispatchConfig::default()
        },
        Callbacks::new(Default::default()),
        Arc::new(AsyncStats::default()),
    );
    let dispatching = tokio::spawn({
        let d = dispatcher.clone();
        async move {
            if deliver {
                d.run().await
            }
        }
    });
    let mut gw = gateway(routes.clone());
    let g = Arc::get_mut(&mut gw).expect("not shared yet");
    g.byte_loop = byte_loop;
    g.async_calls = Some(faasgate::api::async_call::AsyncCalls {
        store: store.clone(),
        dispatcher,
        max_body,
    });
    let stop = serve_until_stopped(listener, gw, Duration::from_secs(60), move || {
        dispatching.abort()
    });
    (InProc { addr, routes, stop }, store)
}

/// A gateway on `127.0.0.1:0` with the forwarder's settings given, serving invocations by
/// the byte loop or (`false`) by hyper.
#[allow(dead_code)]
pub async fn spawn_gateway_config(
    routes: Arc<Routes>,
    byte_loop: bool,
    config: ForwardConfig,
) -> InProc {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("gateway address");
    // `read_timeout` bounds a request's head and each piece of its body, as in the binary.
    let read_timeout = config.client_body_timeout;
    let mut gw = gateway_with_config(routes.clone(), config);
    Arc::get_mut(&mut gw).expect("not shared yet").byte_loop = byte_loop;
    let stop = serve_until_stopped(listener, gw, read_timeout, || ());
    InProc { addr, routes, stop }
}

/// [`spawn_gateway_on`] on `127.0.0.1:0`.
pub async fn spawn_gateway(routes: Arc<Routes>) -> InProc {
    spawn_gateway_on(([127, 0, 0, 1], 0).into(), routes).await
}

/// Deploys `name` (default namespace) with one replica per address, ready.
pub fn publish(routes: &Routes, name: &str, addrs: &[SocketAddr]) -> Arc<FunctionHandle> {
    let key = FunctionKey::new(name, "").expect("valid function name");
    let handle = routes.upsert(&key);
    let replicas: Vec<Arc<Replica>> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| Replica::new(format!("{name}-{i}"), *a))
        .collect();
    handle.publish(FunctionState {
        replicas: replicas.into(),
        desired: addrs.len() as u64,
        cold_start_replicas: 1,
        scale: Default::default(),
    });
    handle
}

// === upstream ===

type UpBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Serves the upstream on `listener` until the runtime stops.
pub async fn serve_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = server::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

/// A fast upstream on `127.0.0.1:0`: GET answers [`GET_BODY`], other methods echo the body.
pub async fn spawn_upstream() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    tokio::spawn(serve_upstream(listener));
    addr
}

/// [`spawn_upstream`] that also counts the requests it answers.
pub async fn spawn_counting_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    answer(req)
                });
                let _ = server::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

async fn answer(req: Request<Incoming>) -> Result<Response<UpBody>, Infallible> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        let body = Full::new(Bytes::from_static(GET_BODY))
            .map_err(|e| match e {})
            .boxed_unsync();
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(r);
    }
    let len = req.headers().get(header::CONTENT_LENGTH).cloned();
    let mut r = Response::new(req.into_body().boxed_unsync());
    if let Some(len) = len {
        r.headers_mut().insert(header::CONTENT_LENGTH, len);
    }
    Ok(r)
}

// === impl Client ===

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let (sender, conn) = client::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Client { sender }
    }

    /// Sends one request and reads the whole response; returns its status and body length.
    pub async fn call(&mut self, method: Method, path: &'static str, body: Bytes) -> (u16, usize) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "gateway")
            .body(Full::new(body))
            .expect("valid request");
        self.sender.ready().await.expect("connection ready");
        let resp = self.sender.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("body frame").into_data() {
                len += data.len();
            }
        }
        (status, len)
    }
}
