//! Starting and stopping a server: wiring the parts together, listening, and shutting down without losing an
//! acknowledged reading.

use std::net::SocketAddr;
use std::sync::Arc;

use tessera_store::StoreError;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::Layer;

use crate::app::App;
use crate::bootstrap::{Credentials, OpenError, Opened, bootstrap, open_store_to_serve};
use crate::cluster::{self, Hearers, Peers};
use crate::config::Config;
use crate::data::DataService;
use crate::http;
use crate::hub::Hub;
use crate::last_readings::LastReadings;
use crate::people::PeopleService;
use crate::tls::Certificates;
use crate::tokens::TokenService;
use crate::writer::ReadingWriter;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot listen for HTTP on {addr}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for MQTT on {addr}")]
    ListenMqtt { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for metrics scrapes on {addr}")]
    ListenMetrics { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for HTTPS on {addr}")]
    ListenHttps { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for MQTTS on {addr}")]
    ListenMqtts { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen for the other nodes' changes")]
    Join(#[source] tessera_store::StoreError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A running server. Dropping it stops it too, but only [`Server::shutdown`] waits for the last commit.
#[derive(Debug)]
pub struct Server {
    http_addr: SocketAddr,
    mqtt_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    mqtts_addr: Option<SocketAddr>,
    certificates: Option<Arc<Certificates>>,
    credentials: Option<Credentials>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// The address HTTP listens on (with the real port when the configuration asked for port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address MQTT listens on, if it listens.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// The address of the listener serving only `/metrics`, when `metrics_addr` asked for one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The address HTTPS listens on, when TLS is configured.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The address MQTTS listens on, when TLS is configured.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.mqtts_addr
    }

    /// The TLS certificate in force and what its reloads did, when TLS is configured.
    pub fn certificates(&self) -> Option<&Arc<Certificates>> {
        self.certificates.as_ref()
    }

    /// The bootstrap credentials, when this start created the account; `None` on every later start.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Stops accepting requests, lets requests in flight finish, commits every queued reading, records token
    /// usage and device activity, and closes the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "server task failed during shutdown");
        }
    }

    /// Waits until the server stops by itself (it does not, short of a failure) or `signal` completes.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// Opens the data directory (creating and bootstrapping it on first start) and starts serving.
pub async fn start(config: Config) -> Result<Server, StartError> {
    config.check()?;
    // Loaded before anything is opened: a file that cannot serve stops the start, named by its key.
    let certificates = match config.tls_files()? {
        Some(files) => Some(Arc::new(Certificates::load(files).map_err(crate::tls::LoadError::into_config_error)?)),
        None => None,
    };
    let Opened { store, key, events, lock } = open_store_to_serve(&config).await?;
    let credentials = bootstrap(store.as_ref(), &key).await?;
    // Listening starts before serving, so no change another node makes once this one answers is missed.
    let (peers, joined) = match events {
        Some(events) => {
            let (peers, joined) = cluster::join(events).await.map_err(StartError::Join)?;
            (peers, Some(joined))
        }
        None => (Peers::none(), None),
    };
    let store_kind = if peers.is_alone() { "sqlite" } else { "postgres" };

    let hub = Arc::new(Hub::new(config.hub_capacity, peers.clone()));
    // Last values are answered from memory only where this node is the store's only writer.
    let last_readings = LastReadings::new(peers.is_alone(), config.device_cache_capacity);
    let (writer, writer_task) =
        ReadingWriter::start(store.clone(), hub.clone(), last_readings, config.writer_queue, config.writer_max_batch);
    // Refusals of credentials that name no account go to the first one: its administrators run the server.
    let accounts = store.accounts().await.map_err(OpenError::Bootstrap)?;
    let home_account = accounts.first().map(|account| account.id).ok_or(OpenError::Bootstrap(StoreError::NotFound))?;
    let audit = Arc::new(crate::audit::Audit::new(store.clone(), home_account, config.audit_retention));
    let tokens = Arc::new(
        TokenService::new(store.clone(), key.clone(), config.token_cache_capacity, audit.clone())
            .with_rate_limits(config.rate_limits),
    );
    let data = Arc::new(DataService::new(store.clone(), writer.clone(), config.device_cache_capacity));
    let (stop_cluster, cluster_stopped) = watch::channel(false);
    let cluster_task = joined.map(|joined| {
        let hearers = Hearers { tokens: tokens.clone(), data: data.clone(), hub: hub.clone() };
        tokio::spawn(joined.run(hearers, cluster_stopped))
    });
    let people = Arc::new(PeopleService::new(
        store.clone(),
        tokens.clone(),
        key,
        config.access_token_ttl,
        config.refresh_token_ttl,
    ));
    let teams = Arc::new(crate::teams::TeamService::new(store.clone(), tokens.clone(), people.clone()));
    let services = crate::app::Services { tokens: tokens.clone(), data, people, teams, hub, peers };
    let app = App::new(Arc::new(config.clone()), store.clone(), services);

    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| StartError::Listen { addr: config.http_addr, source })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.http_addr, source })?;
    tracing::info!(%http_addr, store = store_kind, data_dir = %config.data_dir.display(), "tessera is serving HTTP");

    let (stop, stopped) = watch::channel(false);
    let mut https_listener = None;
    let mut mqtt_listeners = Vec::new();
    let mut https_addr = None;
    let mut mqtts_addr = None;
    if let Some(certificates) = &certificates {
        if let Some(addr) = config.https_addr {
            let listener = TcpListener::bind(addr).await.map_err(|source| StartError::ListenHttps { addr, source })?;
            let bound = listener.local_addr().map_err(|source| StartError::ListenHttps { addr, source })?;
            tracing::info!(https_addr = %bound, "tessera is serving HTTPS");
            // hyper here speaks HTTP/1.1 only: a client offering h2 as well gets HTTP/1.1.
            let tls = certificates.acceptor(&[b"http/1.1"]);
            https_listener = Some(http::listener::HttpsListener { tcp: listener, tls });
            https_addr = Some(bound);
        }
        if let Some(addr) = config.mqtts_addr {
            let listener = TcpListener::bind(addr).await.map_err(|source| StartError::ListenMqtts { addr, source })?;
            let bound = listener.local_addr().map_err(|source| StartError::ListenMqtts { addr, source })?;
            tracing::info!(mqtts_addr = %bound, "tessera is serving MQTTS");
            mqtt_listeners.push(crate::mqtt::Listener { tcp: listener, tls: Some(certificates.acceptor(&[])) });
            mqtts_addr = Some(bound);
        }
        tokio::spawn(crate::tls::watch(certificates.clone(), crate::tls::RELOAD_CHECK_EVERY, stop.subscribe()));
    }
    let mqtt_addr = match TcpListener::bind(config.mqtt_addr).await {
        Ok(listener) => {
            let addr =
                listener.local_addr().map_err(|source| StartError::ListenMqtt { addr: config.mqtt_addr, source })?;
            tracing::info!(mqtt_addr = %addr, "tessera is serving MQTT");
            mqtt_listeners.push(crate::mqtt::Listener { tcp: listener, tls: None });
            Some(addr)
        }
        Err(source) if config.mqtt_required => return Err(StartError::ListenMqtt { addr: config.mqtt_addr, source }),
        Err(error) => {
            tracing::warn!(
                addr = %config.mqtt_addr, %error,
                "cannot listen for MQTT on the default address (is another broker there?); serving HTTP only. \
                 Choose another with --mqtt-addr"
            );
            None
        }
    };
    if !mqtt_listeners.is_empty() {
        tokio::spawn(crate::mqtt::serve(mqtt_listeners, app.clone(), stop.subscribe()));
    }
    let usage_tokens = tokens.clone();
    let activity_writer = writer.clone();
    let mut usage_stopped = stop.subscribe();
    let flush_interval = config.usage_flush_interval;
    let usage_audit = audit.clone();
    let usage_task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(flush_interval);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_EVERY);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = housekeeping.tick() => {
                    housekeep(&usage_audit).await;
                    continue;
                }
                _ = usage_stopped.changed() => break,
            }
            if let Err(error) = usage_tokens.flush_usage().await {
                tracing::warn!(error = ?error, "could not record token usage; will retry");
            }
            // Tokens idle past their window leave the counter map, so it holds only the recently active.
            usage_tokens.quotas().sweep();
            if let Err(error) = usage_audit.flush_refusals(false).await {
                tracing::warn!(error = ?error, "could not record refused credentials in the audit trail; dropped");
            }
            if let Err(error) = activity_writer.flush_activity().await {
                tracing::warn!(error = ?error, "could not record when devices were last seen; will retry");
            }
        }
    });

    let limits = http::listener::Limits::from_config(&config);
    let metrics = app.metrics.clone();
    let metrics_addr = match config.metrics_addr {
        Some(addr) => {
            let listener =
                TcpListener::bind(addr).await.map_err(|source| StartError::ListenMetrics { addr, source })?;
            let bound = listener.local_addr().map_err(|source| StartError::ListenMetrics { addr, source })?;
            tracing::info!(metrics_addr = %bound, "tessera is serving /metrics");
            let routes = tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash()
                .layer(http::counted(http::metrics::dedicated_router(app.clone()), metrics.clone()));
            // Stops accepting with the main listener; a scrape in flight finishes on its own.
            tokio::spawn(http::listener::serve(
                listener,
                None,
                routes,
                limits,
                metrics.clone(),
                "metrics",
                stop.subscribe(),
            ));
            Some(bound)
        }
        None => None,
    };
    // Trailing slashes are trimmed before routing, so every path answers with and without one.
    let routes = tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash()
        .layer(http::counted(http::router(app), metrics.clone()));
    warn_if_connections_outnumber_files(limits.max_connections);
    let task = tokio::spawn(async move {
        // Returns once stopped (or the `Server` handle dropped) and every connection has finished its request.
        http::listener::serve(listener, https_listener, routes, limits, metrics, "http", stopped).await;
        // No request is in flight any more: commit whatever is queued, then stop the writer.
        writer.stop().await;
        if let Err(error) = writer_task.await {
            tracing::error!(%error, "reading writer failed");
        }
        let _ = usage_task.await;
        if let Err(error) = tokens.flush_usage().await {
            tracing::warn!(error = ?error, "could not record token usage at shutdown");
        }
        if let Err(error) = audit.flush_refusals(true).await {
            tracing::warn!(error = ?error, "could not record refused credentials at shutdown");
        }
        // After the writer's last commit, so the last readings' devices are recorded too.
        if let Err(error) = writer.flush_activity().await {
            tracing::warn!(error = ?error, "could not record when devices were last seen at shutdown");
        }
        // The last changes (the writer's last readings) go out to the other nodes before the store closes.
        let _ = stop_cluster.send(true);
        if let Some(cluster_task) = cluster_task {
            let _ = cluster_task.await;
        }
        store.close().await;
        // Only now may another server or a restore have the data directory.
        drop(lock);
        tracing::info!("tessera stopped");
    });

    Ok(Server { http_addr, mqtt_addr, https_addr, mqtts_addr, metrics_addr, certificates, credentials, stop, task })
}

/// File descriptors kept for what is not an HTTP connection: the store's files and connections, MQTT clients, the
/// listeners, logs.
const FILES_BESIDES_HTTP: u64 = 256;

/// How often the audit trail is pruned and expired tokens are recorded in it.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The audit trail's periodic work: each token that expired since the last round gets its entry, and entries past
/// the retention are deleted. Failures are logged and tried again next round.
async fn housekeep(audit: &crate::audit::Audit) {
    match audit.record_expiries().await {
        Ok(0) => {}
        Ok(expired) => tracing::info!(expired, "recorded expired tokens in the audit trail"),
        Err(error) => tracing::warn!(?error, "could not record expired tokens in the audit trail; will retry"),
    }
    match audit.prune().await {
        Ok(0) => {}
        Ok(pruned) => tracing::info!(pruned, "pruned audit entries past their retention"),
        Err(error) => tracing::warn!(?error, "could not prune the audit trail; will retry"),
    }
}

/// At the connection bound Tessera stops accepting, so the store and MQTT keep their descriptors; a bound above
/// the process's open-file limit never comes into play (accepts then fail instead, and so may the store).
fn warn_if_connections_outnumber_files(max_connections: usize) {
    let Some(limit) = crate::accept::open_file_limit() else { return };
    let wanted = max_connections as u64 + FILES_BESIDES_HTTP;
    if wanted > limit {
        tracing::warn!(
            http_max_connections = max_connections,
            open_file_limit = limit,
            "the open-file limit is below the HTTP connection bound plus {FILES_BESIDES_HTTP} for the store and \
             MQTT: raise it (ulimit -n, systemd LimitNOFILE={wanted}) or lower http_max_connections"
        );
    }
}
