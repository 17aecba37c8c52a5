//! The requests, one by one: decoding, the checks every field gets, and what each does to the store.

use super::Relay;
use crate::protocol::codec::{decode_request, encode_reply, salvage_req};
use crate::protocol::{ErrorCode, Reply, Request, UserPresence};
use crate::store::{Admission, Enqueued, Registration, Store, StoreError};

/// A handled frame: the reply, and what it did to the calling device.
pub(super) struct Handled {
    pub(super) reply: Reply,
    /// The device is now registered.
    pub(super) registered: bool,
    /// That registration created the device (a new queue, whose sequence numbers start at 1).
    pub(super) fresh: bool,
    /// The device removed itself.
    pub(super) removed_self: bool,
}

impl Handled {
    /// A reply that changed nothing about the calling device.
    pub(super) fn reply(reply: Reply) -> Self {
        Handled {
            reply,
            registered: false,
            fresh: false,
            removed_self: false,
        }
    }
}

/// What went wrong with a request: the reply's code and text.
pub(super) struct Refusal(pub(super) ErrorCode, pub(super) String);

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        let code = match &error {
            StoreError::DeviceTaken { .. } => ErrorCode::DeviceTaken,
            StoreError::InviteRequired { .. } => ErrorCode::InviteRequired,
            StoreError::TooManyPrekeys { .. }
            | StoreError::RepeatedDevice { .. }
            | StoreError::TooManyDevices { .. } => ErrorCode::Invalid,
            StoreError::QueueFull { .. } => ErrorCode::QueueFull,
            StoreError::UnknownDevice { .. } => ErrorCode::NotRegistered,
            StoreError::UnknownUser { .. } => ErrorCode::UnknownUser,
            StoreError::NotARecipient { .. } | StoreError::NotYourDevice { .. } => {
                ErrorCode::UnknownDevice
            }
            StoreError::Database(_) => {
                tracing::error!(%error, "relay store failed");
                return Refusal(ErrorCode::Internal, "storage failure; retry later".into());
            }
        };
        Refusal(code, error.to_string())
    }
}

impl<S: Store> Relay<S> {
    /// Handles one frame (see [`Handled`]).
    pub(super) async fn handle(&self, device: &str, bytes: &[u8]) -> Handled {
        let request = match decode_request(bytes) {
            Ok(request) => request,
            Err(error) => {
                return Handled::reply(Reply::Error {
                    req: salvage_req(bytes),
                    code: ErrorCode::Malformed,
                    message: error.to_string(),
                });
            }
        };
        let req = request.req();
        let registering = matches!(request, Request::RegisterDevice { .. });
        let removing_self = matches!(
            &request,
            Request::RemoveDevice { device: target, .. }
                if target.as_deref().is_none_or(|target| target == device)
        );
        // Whether the device exists before its registration (a race with another connection of the same
        // device registering at once only costs a needless or a late reset of the cursors).
        let fresh = registering && matches!(self.inner.store.device(device).await, Ok(None));
        match self.execute(device, request).await {
            Ok(reply) => Handled {
                reply,
                registered: registering,
                fresh,
                removed_self: removing_self,
            },
            Err(Refusal(code, message)) => Handled::reply(Reply::Error {
                req: Some(req),
                code,
                message,
            }),
        }
    }

    fn check(&self, what: &str, value: &str, max: usize) -> Result<(), Refusal> {
        if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
            return Err(Refusal(
                ErrorCode::Invalid,
                format!("{what} must be 1 to {max} bytes without control characters"),
            ));
        }
        Ok(())
    }

    /// Does what `request` asks for `device`.
    async fn execute(&self, device: &str, request: Request) -> Result<Reply, Refusal> {
        let config = &self.inner.config;
        let store = &self.inner.store;
        match request {
            Request::RegisterDevice {
                req,
                username,
                identity_key,
                signing_key,
                invite,
            } => {
                self.check("username", &username, config.max_username)?;
                self.check("identity_key", &identity_key, config.max_field)?;
                self.check("signing_key", &signing_key, config.max_field)?;
                if let Some(token) = &invite {
                    self.check("invite", token.expose(), config.max_field)?;
                }
                let token_hash = invite
                    .as_ref()
                    .map(|token| crate::invite::token_hash(token.expose()));
                let registration = Registration {
                    username: &username,
                    device,
                    identity_key: &identity_key,
                    signing_key: &signing_key,
                };
                let admission = Admission {
                    invite_only: config.invite_only,
                    token_hash: token_hash.as_deref(),
                };
                store.register_device(&registration, &admission).await?;
                Ok(Reply::Ok { req })
            }
            Request::ListDevices { req, username } => {
                self.check("username", &username, config.max_username)?;
                self.require_registered(device).await?;
                let devices = store.list_devices(&username).await?;
                Ok(Reply::Devices {
                    req,
                    username,
                    devices,
                })
            }
            Request::CountPrekeys { req } => {
                self.require_registered(device).await?;
                let one_time_keys = store.count_one_time_keys(device).await?;
                Ok(Reply::Prekeys { req, one_time_keys })
            }
            Request::LinkDevice { req } => {
                let Some(me) = store.device(device).await? else {
                    return Err(Refusal(
                        ErrorCode::NotRegistered,
                        "register this device first".into(),
                    ));
                };
                let (token, expires_at) =
                    crate::invite::mint(store, Some(&me.username), config.link_ttl).await?;
                Ok(Reply::Link {
                    req,
                    token: token.as_str().into(),
                    expires_at,
                })
            }
            Request::PublishPrekeys {
                req,
                one_time_keys,
                fallback_key,
            } => {
                if one_time_keys.len() > config.max_prekeys {
                    return Err(Refusal(
                        ErrorCode::Invalid,
                        format!("at most {} one-time keys per request", config.max_prekeys),
                    ));
                }
                for key in one_time_keys.iter().chain(fallback_key.as_ref()) {
                    self.check("key_id", &key.key_id, config.max_field)?;
                    self.check("key", &key.key, config.max_field)?;
                }
                store
                    .publish_prekeys(device, &one_time_keys, fallback_key.as_ref())
                    .await?;
                Ok(Reply::Ok { req })
            }
            Request::FetchBundle { req, username } => {
                self.check("username", &username, config.max_username)?;
                self.require_registered(device).await?;
                let devices = store.fetch_bundles(&username).await?;
                Ok(Reply::Bundle {
                    req,
                    username,
                    devices,
                })
            }
            Request::Send {
                req,
                message_id,
                to,
                envelopes,
            } => {
                self.check("message_id", &message_id, config.max_field)?;
                self.check("to", &to, config.max_username)?;
                if envelopes.is_empty() || envelopes.len() > config.max_envelopes {
                    return Err(Refusal(
                        ErrorCode::Invalid,
                        format!("a send needs 1 to {} envelopes", config.max_envelopes),
                    ));
                }
                let header = super::size::deliver_header(device, &message_id, config.max_username);
                for envelope in &envelopes {
                    if super::size::deliver_size(header, &envelope.ciphertext) > config.max_frame {
                        let most = config.max_frame.saturating_sub(header);
                        return Err(Refusal(
                            ErrorCode::Invalid,
                            format!(
                                "the ciphertext for {} is too large: its deliver frame must fit in \
                                 {} bytes, which leaves at most {most} bytes of (JSON-encoded) \
                                 ciphertext for this message id",
                                envelope.device, config.max_frame
                            ),
                        ));
                    }
                }
                match store.enqueue(device, &message_id, &to, &envelopes).await? {
                    Enqueued::Stored {
                        copies,
                        from_user,
                        stored_at,
                    } => {
                        self.inner.metrics.stored.increment(copies.len() as u64);
                        for (recipient, seq) in copies {
                            let Some(envelope) = envelopes.iter().find(|e| e.device == recipient)
                            else {
                                continue;
                            };
                            self.notify(&recipient, seq, || {
                                encode_reply(&Reply::Deliver {
                                    seq,
                                    from_user: from_user.clone(),
                                    from_device: device.to_owned(),
                                    message_id: message_id.clone(),
                                    ciphertext: envelope.ciphertext.clone(),
                                    stored_at,
                                })
                            });
                        }
                        Ok(Reply::Sent {
                            req,
                            message_id,
                            duplicate: false,
                        })
                    }
                    Enqueued::Duplicate => Ok(Reply::Sent {
                        req,
                        message_id,
                        duplicate: true,
                    }),
                }
            }
            Request::Ping { req } => Ok(Reply::Pong { req }),
            Request::ListUsers { req } => {
                let visible = store.visible_users(device).await?;
                let online = self.inner.online.lock().unwrap_or_else(|p| p.into_inner());
                let users = visible
                    .into_iter()
                    .map(|(username, devices)| UserPresence {
                        online: devices.iter().any(|d| online.contains_key(d)),
                        username,
                    })
                    .collect();
                Ok(Reply::Users { req, users })
            }
            Request::RemoveDevice {
                req,
                device: target,
            } => {
                let target = target.unwrap_or_else(|| device.to_owned());
                self.check("device", &target, config.max_field)?;
                if !store.remove_device(device, &target).await? {
                    return Err(Refusal(
                        ErrorCode::UnknownDevice,
                        format!("no device {target}"),
                    ));
                }
                // Its other open channels (a lost phone still connected) are told and closed.
                self.device_removed(&target);
                Ok(Reply::Ok { req })
            }
            Request::Ack { req, messages } => {
                if messages.len() > config.max_acks {
                    return Err(Refusal(
                        ErrorCode::Invalid,
                        format!("at most {} acks per request", config.max_acks),
                    ));
                }
                store.ack(device, &messages).await?;
                Ok(Reply::Ok { req })
            }
        }
    }

    async fn require_registered(&self, device: &str) -> Result<(), Refusal> {
        match self.inner.store.device(device).await? {
            Some(_) => Ok(()),
            None => Err(Refusal(
                ErrorCode::NotRegistered,
                "register this device first".into(),
            )),
        }
    }
}
