//! DeleteTopics: deletes topics named in the request (v1-5 by name; v6 by name or topic id)
//! and answers per topic.

use proto_kafka::messages::delete_topics_response::DeletableTopicResult;
use proto_kafka::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use proto_kafka::protocol::StrBytes;
use proto_kafka::ResponseError;
use uuid::Uuid;

use super::create_topics::{duplicates, in_controller};
use super::RequestContext;
use crate::broker::SharedBroker;
use crate::error::ApiError;

/// One topic the request asks to delete, as the client identified it.
#[derive(Debug)]
enum Target {
    Name(String),
    Id(Uuid),
    /// Refused before acting, e.g. named twice or by both name and id.
    Refused {
        name: Option<String>,
        topic_id: Uuid,
        error: ApiError,
    },
}

/// What happened to one target.
struct Outcome {
    name: Option<String>,
    topic_id: Uuid,
    result: Result<(), ApiError>,
}

pub async fn handle(
    broker: SharedBroker,
    context: RequestContext,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let version = context.api_version;
    let mut outcomes = Vec::new();
    for target in targets(version, request) {
        outcomes.push(match target {
            Target::Name(name) => {
                let deleting = name.clone();
                let deleted =
                    in_controller(&broker, move |broker| broker.delete_topic(&deleting)).await;
                Outcome {
                    name: Some(name),
                    topic_id: deleted.as_ref().copied().unwrap_or_else(|_| Uuid::nil()),
                    result: deleted.map(drop),
                }
            }
            Target::Id(topic_id) => {
                // The name is looked up next to the decision so that the window in which a
                // topic of the same name could replace this id stays as small as possible.
                let deleted = in_controller(&broker, move |broker| {
                    let name = broker
                        .metadata
                        .image()
                        .topic_by_id(&topic_id)
                        .map(|topic| topic.name.clone())
                        .ok_or_else(|| {
                            ApiError::new(
                                ResponseError::UnknownTopicId,
                                "This server does not host this topic ID.",
                            )
                        })?;
                    broker.delete_topic(&name).map(|_| name)
                })
                .await;
                Outcome {
                    name: deleted.as_ref().ok().cloned(),
                    topic_id,
                    result: deleted.map(drop),
                }
            }
            Target::Refused {
                name,
                topic_id,
                error,
            } => Outcome {
                name,
                topic_id,
                result: Err(error),
            },
        });
    }
    let responses = outcomes
        .into_iter()
        .map(|outcome| render(version, outcome))
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

/// The request's topics in request order, with names or ids given twice refused (once each).
fn targets(version: i16, request: DeleteTopicsRequest) -> Vec<Target> {
    let given: Vec<Target> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|topic| match (topic.name, topic.topic_id) {
                (Some(name), id) if id.is_nil() => Target::Name(name.to_string()),
                (None, id) if !id.is_nil() => Target::Id(id),
                (name, topic_id) => Target::Refused {
                    error: ApiError::new(
                        ResponseError::InvalidRequest,
                        if name.is_some() {
                            "You may not specify both topic name and topic id."
                        } else {
                            "Neither topic name nor id were specified."
                        },
                    ),
                    name: name.map(|name| name.to_string()),
                    topic_id,
                },
            })
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|name| Target::Name(name.to_string()))
            .collect()
    };
    let duplicate_names = duplicates(given.iter().filter_map(|target| match target {
        Target::Name(name) => Some(name.clone()),
        _ => None,
    }));
    let duplicate_ids = duplicates(given.iter().filter_map(|target| match target {
        Target::Id(id) => Some(*id),
        _ => None,
    }));
    let mut targets: Vec<Target> = duplicate_names
        .iter()
        .map(|name| Target::Refused {
            name: Some(name.clone()),
            topic_id: Uuid::nil(),
            error: ApiError::new(ResponseError::InvalidRequest, "Duplicate topic name."),
        })
        .chain(duplicate_ids.iter().map(|id| Target::Refused {
            name: None,
            topic_id: *id,
            error: ApiError::new(ResponseError::InvalidRequest, "Duplicate topic id."),
        }))
        .collect();
    targets.extend(given.into_iter().filter(|target| match target {
        Target::Name(name) => !duplicate_names.contains(name),
        Target::Id(id) => !duplicate_ids.contains(id),
        Target::Refused { .. } => true,
    }));
    targets
}

fn render(version: i16, outcome: Outcome) -> DeletableTopicResult {
    let mut result = DeletableTopicResult::default().with_name(
        outcome
            .name
            .map(|name| TopicName(StrBytes::from_string(name))),
    );
    if version >= 6 {
        result = result.with_topic_id(outcome.topic_id);
    }
    match outcome.result {
        Ok(()) => result.with_error_code(0),
        Err(error) if version >= 5 => result
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(error.message))),
        Err(error) => result.with_error_code(error.code()),
    }
}

#[cfg(test)]
mod tests {
    use proto_kafka::messages::delete_topics_request::DeleteTopicState;

    use super::*;

    fn by_name(name: &'static str) -> DeleteTopicState {
        DeleteTopicState::default().with_name(Some(TopicName(StrBytes::from_static_str(name))))
    }

    #[test]
    fn versions_before_six_delete_by_topic_names() {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(StrBytes::from_static_str("orders"))]);

        assert!(matches!(&targets(5, request)[..], [Target::Name(name)] if name == "orders"));
    }

    #[test]
    fn version_six_deletes_by_name_or_id_but_not_both() {
        let id = Uuid::new_v4();
        let request = DeleteTopicsRequest::default().with_topics(vec![
            by_name("orders"),
            DeleteTopicState::default().with_topic_id(id),
            by_name("both").with_topic_id(id),
            DeleteTopicState::default(),
        ]);

        let targets = targets(6, request);

        assert!(
            matches!(&targets[..2], [Target::Name(name), Target::Id(by_id)] if name == "orders" && *by_id == id)
        );
        for refused in &targets[2..] {
            let Target::Refused { error, .. } = refused else {
                panic!("{refused:?} should be refused")
            };
            assert_eq!(error.code, ResponseError::InvalidRequest);
        }
    }

    #[test]
    fn a_topic_named_twice_is_refused_once_and_not_deleted() {
        let request = DeleteTopicsRequest::default().with_topics(vec![
            by_name("a"),
            by_name("b"),
            by_name("a"),
        ]);

        let targets = targets(6, request);

        assert_eq!(targets.len(), 2);
        assert!(matches!(&targets[0], Target::Refused { name: Some(name), .. } if name == "a"));
        assert!(matches!(&targets[1], Target::Name(name) if name == "b"));
    }
}
