//! The receiving side of Raft RPCs: the controller listener's accept loop and one task per
//! connection that reads a request frame, hands it to the local Raft, and writes the answer.
//!
//! Bounded: at most [`CONNECTIONS_MAX`] connections (each peer opens about three), frames of
//! at most `FRAME_BYTES_MAX`, and a connection idle for [`IDLE_TIMEOUT`] is closed (a live
//! leader sends heartbeats far more often). Shutting the server down closes the listener and
//! every connection, so a stopped node looks down to its peers.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::frame::{read_frame, write_frame};
use super::messages::{self, AppendOutcome, Request, Response};
use crate::codec;
use crate::stored::StoredVote;
use crate::type_config::{Raft, Snapshot, Vote};

/// Most concurrent connections accepted. A voter needs about three per peer; 256 leaves room
/// for dozens of observers and for connections lingering from restarted peers.
pub const CONNECTIONS_MAX: usize = 256;
/// A connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Answers application requests arriving on the controller listener (see
/// [`crate::MetadataQuorum::set_application_handler`]).
pub trait ApplicationHandler: Send + Sync + 'static {
    fn handle(&self, request: Vec<u8>) -> futures_util::future::BoxFuture<'static, Vec<u8>>;
}

/// The handler slot shared by the server's connections; empty until the application sets it.
pub type HandlerSlot = Arc<std::sync::RwLock<Option<Arc<dyn ApplicationHandler>>>>;

/// Serves Raft RPCs from `listener` until `shutdown` becomes true.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    handler: HandlerSlot,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "controller listener accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::warn!(%peer, "controller listener: too many connections, closing");
                    continue;
                };
                let raft = raft.clone();
                let handler = Arc::clone(&handler);
                connections.spawn(async move {
                    if let Err(error) = serve_connection(stream, raft, handler).await {
                        tracing::debug!(%peer, %error, "raft connection closed");
                    }
                    drop(permit);
                });
            }
        }
    }
    // Dropping the set aborts every connection task.
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, raft: Raft, handler: HandlerSlot) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    loop {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut stream)).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) | Err(_) => return Ok(()),
            Ok(Err(error)) => return Err(error),
        };
        let response = match codec::decode::<Request>(&frame) {
            Ok(Request::Application(request)) => {
                let handler = handler.read().expect("handler lock poisoned").clone();
                match handler {
                    Some(handler) => Response::Application(handler.handle(request).await),
                    None => Response::Refused("no application handler yet".into()),
                }
            }
            Ok(request) => handle(&raft, request).await,
            Err(error) => Response::Refused(format!("undecodable request: {error}")),
        };
        let payload = codec::encode(&response)?;
        write_frame(stream.get_mut(), &payload).await?;
    }
}

async fn handle(raft: &Raft, request: Request) -> Response {
    match request {
        Request::AppendEntries {
            vote,
            prev_log_id,
            entries,
            leader_commit,
        } => {
            let request = match messages::into_append_entries_request(
                vote,
                prev_log_id,
                entries,
                leader_commit,
            ) {
                Ok(request) => request,
                Err(error) => return Response::Refused(error.to_string()),
            };
            match raft.append_entries(request).await {
                Ok(response) => Response::AppendEntries(AppendOutcome::from(&response)),
                Err(error) => Response::Refused(error.to_string()),
            }
        }
        Request::Vote(wire) => match raft.vote(messages::into_vote_request(wire)).await {
            Ok(response) => messages::vote_response(&response),
            Err(error) => Response::Refused(error.to_string()),
        },
        Request::PreVote(wire) => match raft.pre_vote(messages::into_vote_request(wire)).await {
            Ok(response) => messages::vote_response(&response),
            Err(error) => Response::Refused(error.to_string()),
        },
        Request::FullSnapshot { vote, meta, image } => {
            let meta = match messages::into_snapshot_meta(meta) {
                Ok(meta) => meta,
                Err(error) => return Response::Refused(error.to_string()),
            };
            let snapshot = Snapshot {
                meta,
                snapshot: image,
            };
            match raft.install_full_snapshot(Vote::from(vote), snapshot).await {
                Ok(response) => Response::Snapshot {
                    vote: StoredVote::from(&response.vote),
                },
                Err(error) => Response::Refused(error.to_string()),
            }
        }
        Request::Application(_) => unreachable!("application requests are answered by the handler"),
    }
}
