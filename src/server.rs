//! `karst server`: load config, format or check the data directory, recover logs, replay
//! metadata, listen, run background tasks, and shut down cleanly on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use karst_storage::{LogCleaner, LogConfig, LogManager, LogManagerOptions};

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::fetch_session::FetchSessionCache;
use crate::metadata::MetadataView;
use crate::replication::ReplicaManager;
use karst_raft::{MetadataQuorum, QuorumOptions};

/// Arguments of `karst server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// TOML file of broker settings with Kafka's key names (`"log.retention.ms" = 3600000`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Sets one broker key, overriding the file (repeatable): `--set num.partitions=6`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// How often partition size gauges are refreshed.
const SIZE_METRICS_INTERVAL: Duration = Duration::from_secs(5);
/// How often logs in `flush.ms` mode are checked for a due sync.
const FLUSH_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// Where the metadata quorum keeps its Raft log and snapshots, inside `log.dirs` (not a
/// `<topic>-<partition>` name, so the log manager leaves it alone).
pub const METADATA_DIR: &str = "__cluster_metadata";
/// How long start-up waits for this broker's registration before serving clients anyway.
const REGISTRATION_WAIT: Duration = Duration::from_secs(60);

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // openraft narrates every vote and append at info: keep it to warnings.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = BrokerConfig::load(args.config.as_deref(), &args.sets)?;
    let source = match &args.config {
        Some(path) => format!("{} + {} --set", path.display(), args.sets.len()),
        None if args.sets.is_empty() => "defaults".to_owned(),
        None => format!("defaults + {} --set", args.sets.len()),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("karst-net")
        .build()?
        .block_on(serve(config, source))
}

async fn serve(config: BrokerConfig, source: String) -> anyhow::Result<()> {
    let metrics = crate::admin::install_recorder()?;
    let dir = config.log_dir.clone();
    // The no-argument single node formats itself; a directory of another cluster or node
    // id is refused.
    let identity =
        crate::meta_properties::load_or_format(&dir, config.cluster_id.as_deref(), config.node_id)?;
    let cluster_id = identity.cluster_id.clone();
    let default_log_config = LogConfig::default();
    let options = LogManagerOptions {
        dir: dir.clone(),
        storage_threads: config.storage_threads,
        backend: karst_storage::io::select_backend(config.io_backend)
            .with_context(|| format!("log.io.backend = {:?}", config.io_backend))?,
        min_free_bytes: config.min_free_bytes,
        commit_queue_bytes_max: config.commit_queue_bytes_max,
    };
    let logs = tokio::task::spawn_blocking(move || LogManager::open(options, &default_log_config))
        .await?
        .context("opening the log directory")?;
    let logs = Arc::new(logs);
    metrics::gauge!("karst_storage_io_backend", "backend" => logs.backend_name()).set(1.0);
    metrics::gauge!("karst_log_dir_min_free_bytes").set(config.min_free_bytes as f64);
    let quorum = Arc::new(start_quorum(&config, &cluster_id).await?);
    // Replicas take roles from metadata only once this node's own registration is in it
    // (see `follow_images`): the image a restarting node has on disk is stale.
    let replicas = ReplicaManager::new(config.node_id, Arc::clone(&logs));
    let admin_listener = TcpListener::bind(config.admin_listener)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (admin.listener)",
                config.admin_listener
            )
        })?;
    let group_options = crate::config::groups::GroupOptions::from_broker(&config)?;
    let broker = Arc::new(Broker {
        groups: crate::coordinator::group::GroupCoordinator::new(group_options),
        fetch_sessions: FetchSessionCache::new(config.fetch_session_slots),
        config,
        metadata: MetadataView::new(Arc::clone(&quorum)),
        quorum: Arc::clone(&quorum),
        replicas,
        fetchers: Default::default(),
        controller: Default::default(),
        producer_ids: Default::default(),
        broker_epoch: std::sync::atomic::AtomicI64::new(-1),
        directory_id: identity.directory_id.clone(),
    });
    quorum.set_application_handler(Arc::new(crate::controller::ForwardedRequests(
        Arc::downgrade(&broker),
    )));
    // The cleaner is a thread of its own: cleaning is long, blocking, throttled file I/O.
    let cleaner = if broker.config.cleaner_enabled {
        Some(LogCleaner::start(
            Arc::clone(&logs),
            broker.config.cleaner.clone(),
        )?)
    } else {
        None
    };
    let (shutdown_sender, shutdown) = watch::channel(false);
    let images = tokio::spawn(follow_images(Arc::clone(&broker), shutdown.clone()));
    // Exported from the start (at zero), so dashboards and alerts see the series.
    metrics::counter!("kafka_server_replicamanager_isrshrinks_total").increment(0);
    metrics::counter!("kafka_server_replicamanager_isrexpands_total").increment(0);
    let isr_checks = tokio::spawn(crate::replication::isr::run_shrink_checks(
        Arc::clone(&broker),
        shutdown.clone(),
    ));
    let offline_checks = tokio::spawn(crate::replication::offline::run_checks(
        Arc::clone(&broker),
        shutdown.clone(),
    ));
    let group_duties = tokio::spawn(crate::coordinator::group::run(
        Arc::clone(&broker),
        shutdown.clone(),
    ));
    let duties = tokio::spawn(crate::controller::run_duties(
        Arc::clone(&broker),
        shutdown.clone(),
    ));
    let lifecycle = broker.config.roles_broker.then(|| {
        tokio::spawn(crate::controller::lifecycle::run(
            Arc::clone(&broker),
            shutdown.clone(),
        ))
    });
    if let Some(running) = &lifecycle {
        tokio::select! {
            () = wait_for_registration(&broker, running) => {}
            reason = quorum.stopped() => return Err(quorum_stopped(&reason)),
        }
        if running.is_finished() {
            let refused = lifecycle.expect("checked").await?;
            quorum.shutdown().await;
            refused.map_err(|error| {
                anyhow::anyhow!("the controller refused this broker: {}", error.message)
            })?;
            anyhow::bail!("broker registration stopped");
        }
    }
    let listener = TcpListener::bind(broker.config.listener)
        .await
        .with_context(|| format!("cannot listen on {} (listeners)", broker.config.listener))?;
    tracing::info!(
        listener = %broker.config.listener,
        advertised = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port),
        admin = %broker.config.admin_listener,
        data_dir = %dir.display(),
        io_backend = logs.backend_name(),
        config_source = %source,
        node_id = broker.config.node_id,
        controller_listener = %quorum.local_address(),
        %cluster_id,
        "Karst is ready"
    );
    if crate::replication::purgatory::unsafe_early_ack() {
        tracing::warn!(
            env = crate::replication::purgatory::UNSAFE_EARLY_ACK_ENV,
            "UNSAFE TEST BUILD: acks=all is answered before the ISR has the batch; \
             acknowledged writes WILL be lost on failover. Never run this outside a test."
        );
    }
    let network = tokio::spawn(crate::network::serve(
        listener,
        Arc::clone(&broker),
        shutdown.clone(),
    ));
    let admin = tokio::spawn(crate::admin::serve_broker(
        admin_listener,
        metrics,
        Arc::clone(&broker),
        shutdown.clone(),
    ));
    let maintenance = tokio::spawn(maintain(Arc::clone(&broker), shutdown.clone()));
    // Handlers go in before READY=1: a SIGTERM sent right after readiness must reach them
    // rather than the default action, which kills the process without a clean shutdown.
    let signals = ShutdownSignals::install();
    crate::systemd::notify_ready();
    let quorum_failure = tokio::select! {
        () = signals.wait() => None,
        reason = quorum.stopped() => Some(reason),
    };
    crate::systemd::notify_stopping();
    match &quorum_failure {
        None => tracing::info!("shutting down"),
        Some(reason) => tracing::error!(reason, "the metadata quorum stopped; shutting down"),
    }
    if broker.config.roles_broker && quorum_failure.is_none() {
        crate::controller::lifecycle::controlled_shutdown(&broker).await;
    }
    let _ = shutdown_sender.send(true);
    let _ = network.await;
    let _ = admin.await;
    let _ = maintenance.await;
    let _ = images.await;
    let _ = isr_checks.await;
    let _ = offline_checks.await;
    let _ = group_duties.await;
    if let Err(error) = broker.replicas.checkpoint_high_watermarks() {
        tracing::error!(%error, "writing the high watermark checkpoint at shutdown failed");
    }
    let _ = duties.await;
    if let Some(lifecycle) = lifecycle {
        if let Ok(Err(error)) = lifecycle.await {
            tracing::error!(%error, "broker registration ended");
        }
    }
    quorum.shutdown().await;
    if let Some(cleaner) = cleaner {
        tokio::task::spawn_blocking(move || cleaner.shutdown()).await?;
    }
    // In-flight appends finish inside LogManager::shutdown before logs are closed.
    let closed = tokio::task::spawn_blocking(move || logs.shutdown())
        .await?
        .context("closing logs");
    if let Some(reason) = quorum_failure {
        if let Err(error) = closed {
            tracing::error!(
                error = format!("{error:#}"),
                "closing logs after the quorum stopped"
            );
        }
        return Err(quorum_stopped(&reason));
    }
    closed?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// The error a node exits with when its metadata quorum member stopped (as a Kafka node
/// exits when its metadata log directory fails): it cannot register, fence, create or
/// follow metadata any more, and a restart (by systemd) is the way back.
fn quorum_stopped(reason: &str) -> anyhow::Error {
    anyhow::anyhow!("the metadata quorum stopped: {reason}")
}

/// Starts this node's part of the metadata quorum and, on voters, bootstraps it (a no-op
/// once the quorum exists). Without `controller.quorum.voters` the node is a quorum of one.
async fn start_quorum(config: &BrokerConfig, cluster_id: &str) -> anyhow::Result<MetadataQuorum> {
    let mut options = QuorumOptions::new(
        config.node_id as u64,
        cluster_id,
        config.log_dir.join(METADATA_DIR),
        config.controller_listener,
    );
    options.snapshot_interval_entries = config.snapshot_interval_entries;
    let quorum = MetadataQuorum::start(options)
        .await
        .context("starting the metadata quorum")?;
    if config.roles_controller {
        let voters = if config.voters.is_empty() {
            std::iter::once((config.node_id as u64, quorum.local_address().to_string())).collect()
        } else {
            config.voters.clone()
        };
        quorum
            .bootstrap(voters)
            .await
            .context("bootstrapping the metadata quorum")?;
    }
    Ok(quorum)
}

/// Waits until this broker's registration is in the metadata image (bounded), so clients
/// are never told about a cluster that does not list this broker yet.
async fn wait_for_registration(
    broker: &Broker,
    lifecycle: &tokio::task::JoinHandle<Result<(), crate::error::ApiError>>,
) {
    let deadline = std::time::Instant::now() + REGISTRATION_WAIT;
    let mut images = broker.quorum.subscribe();
    loop {
        // Registered, and the replicas act on metadata that holds the registration: only
        // then does the Kafka port open, so no client meets a replica without its role.
        let registered =
            broker.holds_own_registration(&broker.metadata.image()) && broker.replicas.applied();
        if registered || lifecycle.is_finished() {
            return;
        }
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        if remaining.is_zero() {
            tracing::warn!(
                "not registered with a controller yet (is a quorum of voters up?); serving anyway"
            );
            return;
        }
        let _ =
            tokio::time::timeout(remaining.min(Duration::from_millis(20)), images.changed()).await;
    }
}

/// Applies each new metadata image to the local partitions and starts the follower
/// fetchers they need, until shutdown.
///
/// Nothing is applied before the image holds this node's current registration: a node
/// that restarts replays a stale metadata log first, and acting on it would make it lead
/// partitions at old epochs (accepting writes no follower fetches, and telling clients so)
/// until it caught up. Kafka brokers likewise wait to catch up with the metadata log.
/// Fetchers are also reconciled every second: one that stopped as its last partition moved
/// away may be wanted again before the next image.
async fn follow_images(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut images = broker.quorum.subscribe();
    let mut tick = tokio::time::interval(FETCHER_RECONCILE_INTERVAL);
    let mut applied: Option<Arc<crate::metadata::MetadataImage>> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            changed = images.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let image = Arc::clone(&images.borrow_and_update());
        let fresh = applied
            .as_ref()
            .is_none_or(|last| !Arc::ptr_eq(last, &image));
        if fresh && broker.holds_own_registration(&image) {
            applied = Some(Arc::clone(&image));
            let applier = Arc::clone(&broker);
            let outcome = tokio::task::spawn_blocking(move || {
                applier.replicas.apply_image(&image, &applier.config)
            })
            .await;
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::error!(error = %format!("{error:#}"), "applying a metadata image failed")
                }
                Err(error) => tracing::error!(%error, "applying a metadata image panicked"),
            }
        }
        let leaders = broker.replicas.followed_leaders();
        broker.fetchers.reconcile(&broker, &leaders, &shutdown);
    }
}

/// Replication gauges for Prometheus: under-replicated (against a reassignment's target),
/// reassigning and offline partitions led here, and each follower's lag behind this leader.
fn publish_replication_gauges(broker: &Broker) {
    let mut under_replicated = 0;
    let mut at_min_isr = 0;
    let mut reassigning = 0;
    for partition in broker.replicas.partitions() {
        let view = partition.view();
        if view.role != crate::replication::Role::Leader {
            continue;
        }
        // kafka_exporter's name: consumer lag panels join it with the group offsets.
        metrics::gauge!(
            "kafka_topic_partition_current_offset",
            "topic" => partition.topic_partition.topic.clone(),
            "partition" => partition.topic_partition.partition.to_string()
        )
        .set(view.high_watermark.0 as f64);
        if view.assignment.isr.len() < view.assignment.replication_factor() {
            under_replicated += 1;
        }
        if !view.assignment.adding_replicas.is_empty()
            || !view.assignment.removing_replicas.is_empty()
        {
            reassigning += 1;
        }
        if (view.assignment.isr.len() as i32) <= view.min_insync_replicas {
            at_min_isr += 1;
        }
        for (follower, end) in &view.followers {
            let lag = if *end < 0 {
                view.log_end_offset.0
            } else {
                view.log_end_offset.0 - end
            };
            metrics::gauge!(
                "kafka_server_fetcherlagmetrics_consumerlag",
                "topic" => partition.topic_partition.topic.clone(),
                "partition" => partition.topic_partition.partition.to_string(),
                "follower" => follower.to_string()
            )
            .set(lag as f64);
        }
    }
    metrics::gauge!("kafka_server_replicamanager_underreplicatedpartitions")
        .set(under_replicated as f64);
    metrics::gauge!("kafka_server_replicamanager_atminisrpartitioncount").set(at_min_isr as f64);
    metrics::gauge!("kafka_server_replicamanager_reassigningpartitions").set(reassigning as f64);
    let image = broker.metadata.image();
    if broker.quorum.status().leader_id == Some(broker.quorum.node_id()) {
        let offline = image
            .topics
            .values()
            .flat_map(|topic| topic.partitions.iter())
            .filter(|partition| partition.leader == -1)
            .count();
        metrics::gauge!("kafka_controller_kafkacontroller_offlinepartitionscount")
            .set(offline as f64);
    }
}

/// SIGTERM and SIGINT, caught from the moment `install` returns (tokio registers a handler
/// when the stream is created, not when it is first polled).
struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            terminate: signal(SignalKind::terminate()).expect("installing a SIGTERM handler"),
            interrupt: signal(SignalKind::interrupt()).expect("installing a SIGINT handler"),
        }
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// How often follower fetchers are checked against the partitions this node follows.
const FETCHER_RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// Retention, checkpoints, producer-id expiry, deferred flushes and size gauges, until shutdown.
async fn maintain(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut retention = tokio::time::interval(Duration::from_millis(
        broker.config.retention_check_interval_ms,
    ));
    let mut checkpoint =
        tokio::time::interval(Duration::from_millis(broker.config.checkpoint_interval_ms));
    let mut flush = tokio::time::interval(FLUSH_CHECK_INTERVAL);
    let mut high_watermarks = tokio::time::interval(Duration::from_millis(
        broker
            .config
            .replication
            .high_watermark_checkpoint_interval_ms,
    ));
    let mut sizes = tokio::time::interval(SIZE_METRICS_INTERVAL);
    let mut producer_expiry = tokio::time::interval(Duration::from_millis(
        broker.config.producer_id_expiration_check_interval_ms,
    ));
    let logs = Arc::clone(broker.replicas.logs());
    loop {
        let logs = Arc::clone(&logs);
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = retention.tick() => {
                let replicas = Arc::clone(&broker);
                let _ = tokio::task::spawn_blocking(move || replicas.replicas.apply_retention()).await;
            }
            _ = checkpoint.tick() => {
                let outcome = tokio::task::spawn_blocking(move || logs.checkpoint()).await;
                if let Ok(Err(error)) = outcome {
                    tracing::error!(%error, "writing checkpoints failed");
                }
            }
            _ = high_watermarks.tick() => {
                let replicas = Arc::clone(&broker);
                let outcome = tokio::task::spawn_blocking(move || replicas.replicas.checkpoint_high_watermarks()).await;
                if let Ok(Err(error)) = outcome {
                    tracing::error!(%error, "writing the high watermark checkpoint failed");
                }
                publish_replication_gauges(&broker);
            }
            _ = producer_expiry.tick() => {
                let _ = tokio::task::spawn_blocking(move || logs.remove_expired_producers()).await;
            }
            _ = flush.tick() => {
                let _ = tokio::task::spawn_blocking(move || logs.flush_due()).await;
            }
            _ = sizes.tick() => {
                let dir = logs.dir().to_path_buf();
                let volume = tokio::task::spawn_blocking(move || karst_storage::space::volume_bytes(&dir)).await;
                if let Ok(Ok(volume)) = volume {
                    metrics::gauge!("karst_log_dir_free_bytes").set(volume.usable as f64);
                }
                metrics::gauge!("karst_log_commit_queue_bytes")
                    .set(logs.commit_budget().queued_bytes() as f64);
                let all = logs.all();
                let offline = all.iter().filter(|log| !log.is_online()).count();
                metrics::gauge!("karst_log_offline_logs").set(offline as f64);
                for log in all {
                    let partition = log.topic_partition();
                    metrics::gauge!(
                        "kafka_log_log_size_bytes",
                        "topic" => partition.topic.clone(),
                        "partition" => partition.partition.to_string()
                    )
                    .set(log.size_bytes() as f64);
                }
            }
        }
    }
}
