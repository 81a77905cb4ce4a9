//! The `PersistentSubscriptions` service over the core's
//! [`PersistentSubscriptions`]: competing consumers of a stream or of `$all`.
//!
//! Who may call what (with an [`Authenticator`](crate::Authenticator)):
//!
//! - `Read` (consuming) needs the read scope and reach of the stream; a group on `$all`
//!   needs a token not limited to stream prefixes (see [`consumer::consume_check`]);
//! - `Create`, `Update`, `Delete` and `ReplayParked` manage groups, which KurrentDB
//!   leaves to its operators: they need the admin scope and reach of the stream (every
//!   stream for `$all`); `RestartSubsystem` needs admin over every stream;
//! - `GetInfo` and `List` need read: `List` leaves out the groups of streams outside
//!   the caller's prefixes (and those on `$all` for a prefix-limited caller), and
//!   `GetInfo` of one is `PermissionDenied`.

mod consumer;
mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use foldstore_core::EventStore;
use foldstore_core::persistent::{PersistentSettings, PersistentSubscriptions, Target};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Caller, Need};
use crate::error::{self, invalid_argument};
use crate::proto::event_store::client::Empty;
use crate::proto::event_store::client::StreamIdentifier;
use crate::proto::event_store::client::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptions as Service;
use crate::proto::event_store::client::persistent_subscriptions::{
    CreateReq, CreateResp, DeleteReq, DeleteResp, GetInfoReq, GetInfoResp, GroupOptions, ListReq,
    ListResp, ReadReq, ReplayParkedReq, ReplayParkedResp, SubscriptionInfo, UpdateReq, UpdateResp,
    delete_req, get_info_req, list_req, replay_parked_req,
};
use crate::wire;

/// The connection names of the consumers connected through this service, for
/// `GetInfo` (the `connection-name` header the clients send).
#[derive(Debug, Clone, Default)]
pub(crate) struct Names(Arc<Mutex<HashMap<u64, String>>>);

/// Removes a consumer's name when its call ends.
pub(crate) struct Registered(Names, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

impl Names {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `name` for consumer `id` until the returned guard drops.
    pub(crate) fn register(&self, id: u64, name: String) -> Registered {
        self.lock().insert(id, name);
        Registered(self.clone(), id)
    }

    fn get(&self, id: u64) -> String {
        self.lock().get(&id).cloned().unwrap_or_default()
    }
}

/// The persistent-subscriptions service.
#[derive(Clone)]
pub(crate) struct PersistentService {
    store: Arc<dyn EventStore>,
    subs: Arc<PersistentSubscriptions>,
    names: Names,
}

impl PersistentService {
    pub(crate) fn new(store: Arc<dyn EventStore>, subs: Arc<PersistentSubscriptions>) -> Self {
        Self {
            store,
            subs,
            names: Names::default(),
        }
    }

    fn info(&self, group: &foldstore_core::persistent::GroupInfo) -> SubscriptionInfo {
        settings::info(group, &|id| self.names.get(id))
    }
}

/// The target a request names: a stream or `$all`.
fn target(stream: Option<&StreamIdentifier>, all: bool) -> Result<Target, Status> {
    match (stream, all) {
        (_, true) => Ok(Target::All),
        (Some(stream), false) => Ok(Target::Stream(wire::stream_name(Some(stream))?)),
        (None, false) => Err(invalid_argument(
            "the request names no stream: name a stream or $all",
        )),
    }
}

/// Refuses managing `target`'s groups beyond the caller's grant: admin, and reach of
/// the stream (of every stream for `$all`).
fn manage_check(caller: &Caller, target: &Target) -> Result<(), Status> {
    match target {
        Target::Stream(stream) => caller.check(Need::Admin, Some(stream)),
        Target::All => {
            caller.check(Need::Admin, None)?;
            everything(caller, "$all")
        }
    }
}

/// Refuses a caller limited to stream prefixes.
fn everything(caller: &Caller, what: &str) -> Result<(), Status> {
    if caller.reach().is_everything() {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "access denied: {what} concerns every stream, and this token is limited to stream prefixes"
        )))
    }
}

/// Whether the caller may see `target`'s groups.
fn sees(caller: &Caller, target: &Target) -> bool {
    let reach = caller.reach();
    match target {
        Target::Stream(stream) => reach.allows(stream.as_str()),
        Target::All => reach.is_everything(),
    }
}

/// Refuses showing `target`'s groups to a caller who may not see them.
fn see_check(caller: &Caller, target: &Target) -> Result<(), Status> {
    caller.check(Need::Read, None)?;
    if sees(caller, target) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "access denied: the groups of {target} are outside this token's prefixes"
        )))
    }
}

fn options<T>(options: Option<T>, what: &str) -> Result<T, Status> {
    options.ok_or_else(|| invalid_argument(format!("a {what} request needs options")))
}

#[tonic::async_trait]
impl Service for PersistentService {
    type ReadStream = consumer::ReadStream;

    async fn create(&self, request: Request<CreateReq>) -> Result<Response<CreateResp>, Status> {
        let caller = Caller::of(&request)?;
        let options: GroupOptions = options(request.into_inner().options, "create")?;
        let named = settings::named(&options)?;
        manage_check(&caller, &named.target)?;
        let settings = settings::settings(
            &*self.store,
            &named,
            options.settings.as_ref(),
            PersistentSettings::default(),
        )
        .await?;
        self.subs
            .create(&named.target, &named.group, settings)
            .await
            .map_err(error::persistent)?;
        Ok(Response::new(CreateResp {}))
    }

    async fn update(&self, request: Request<UpdateReq>) -> Result<Response<UpdateResp>, Status> {
        let caller = Caller::of(&request)?;
        let options: GroupOptions = options(request.into_inner().options, "update")?;
        let named = settings::named(&options)?;
        manage_check(&caller, &named.target)?;
        // An update keeps what it does not carry, such as a `$all` group's filter.
        let current = self
            .subs
            .info(&named.target, &named.group)
            .await
            .map_err(error::persistent)?;
        let settings = settings::settings(
            &*self.store,
            &named,
            options.settings.as_ref(),
            current.settings,
        )
        .await?;
        self.subs
            .update(&named.target, &named.group, settings)
            .await
            .map_err(error::persistent)?;
        Ok(Response::new(UpdateResp {}))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let caller = Caller::of(&request)?;
        let options = options(request.into_inner().options, "delete")?;
        let target = match &options.stream_option {
            Some(delete_req::options::StreamOption::StreamIdentifier(s)) => target(Some(s), false),
            Some(delete_req::options::StreamOption::All(_)) => target(None, true),
            None => target(None, false),
        }?;
        manage_check(&caller, &target)?;
        self.subs
            .delete(&target, &options.group_name)
            .await
            .map_err(error::persistent)?;
        Ok(Response::new(DeleteResp {}))
    }

    async fn read(
        &self,
        request: Request<Streaming<ReadReq>>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let caller = Caller::of(&request)?;
        let connection_name = request
            .metadata()
            .get("connection-name")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Response::new(
            consumer::read(
                self.subs.clone(),
                caller,
                self.names.clone(),
                connection_name,
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn get_info(
        &self,
        request: Request<GetInfoReq>,
    ) -> Result<Response<GetInfoResp>, Status> {
        let caller = Caller::of(&request)?;
        let options = options(request.into_inner().options, "get info")?;
        let target = match &options.stream_option {
            Some(get_info_req::options::StreamOption::StreamIdentifier(s)) => {
                target(Some(s), false)
            }
            Some(get_info_req::options::StreamOption::All(_)) => target(None, true),
            None => target(None, false),
        }?;
        see_check(&caller, &target)?;
        let group = self
            .subs
            .info(&target, &options.group_name)
            .await
            .map_err(error::persistent)?;
        Ok(Response::new(GetInfoResp {
            subscription_info: Some(self.info(&group)),
        }))
    }

    async fn replay_parked(
        &self,
        request: Request<ReplayParkedReq>,
    ) -> Result<Response<ReplayParkedResp>, Status> {
        use replay_parked_req::options::{StopAtOption, StreamOption};
        let caller = Caller::of(&request)?;
        let options = options(request.into_inner().options, "replay parked")?;
        let target = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(s)) => target(Some(s), false),
            Some(StreamOption::All(_)) => target(None, true),
            None => target(None, false),
        }?;
        manage_check(&caller, &target)?;
        // A negative stop means no limit, as none does.
        let stop_at = match options.stop_at_option {
            Some(StopAtOption::StopAt(n)) => u64::try_from(n).ok(),
            Some(StopAtOption::NoLimit(_)) | None => None,
        };
        self.subs
            .replay_parked_until(&target, &options.group_name, stop_at)
            .await
            .map_err(error::persistent)?;
        Ok(Response::new(ReplayParkedResp {}))
    }

    async fn list(&self, request: Request<ListReq>) -> Result<Response<ListResp>, Status> {
        use list_req::options::ListOption;
        use list_req::stream_option::StreamOption;
        let caller = Caller::of(&request)?;
        caller.check(Need::Read, None)?;
        let options = options(request.into_inner().options, "list")?;
        let only = match options.list_option {
            Some(ListOption::ListForStream(s)) => Some(match s.stream_option {
                Some(StreamOption::Stream(s)) => target(Some(&s), false)?,
                Some(StreamOption::All(_)) => Target::All,
                None => target(None, false)?,
            }),
            Some(ListOption::ListAllSubscriptions(_)) | None => None,
        };
        if let Some(only) = &only {
            see_check(&caller, only)?;
        }
        let groups = self
            .subs
            .list(only.as_ref())
            .await
            .map_err(error::persistent)?;
        let subscriptions = groups
            .iter()
            .filter(|g| sees(&caller, &g.target))
            .map(|g| self.info(g))
            .collect();
        Ok(Response::new(ListResp { subscriptions }))
    }

    async fn restart_subsystem(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        let caller = Caller::of(&request)?;
        caller.check(Need::Admin, None)?;
        everything(&caller, "restarting the persistent subscriptions")?;
        self.subs.restart().await.map_err(error::persistent)?;
        Ok(Response::new(Empty {}))
    }
}
