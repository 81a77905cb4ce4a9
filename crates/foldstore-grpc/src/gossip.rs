//! `Gossip.Read`: foldstore is a cluster of one, the leader, at the address the client
//! dialled.

use tonic::{Request, Response, Status};

use crate::calls::Dialled;
use crate::proto::event_store::client::Empty;
use crate::proto::event_store::client::gossip::gossip_server::Gossip;
use crate::proto::event_store::client::gossip::member_info::VNodeState;
use crate::proto::event_store::client::gossip::{ClusterInfo, EndPoint, MemberInfo};
use crate::wire;

/// The port KurrentDB's clients use when the connection string names none.
const DEFAULT_PORT: u16 = 2113;

/// The gossip service.
#[derive(Debug, Clone)]
pub(crate) struct GossipService {
    /// This node's id, fixed for the life of the server.
    pub(crate) instance_id: uuid::Uuid,
}

#[tonic::async_trait]
impl Gossip for GossipService {
    async fn read(&self, request: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        let (address, port) = match request.extensions().get::<Dialled>() {
            Some(dialled) => split_authority(&dialled.0),
            None => ("localhost".to_owned(), DEFAULT_PORT),
        };
        let member = MemberInfo {
            instance_id: Some(wire::wire_uuid(self.instance_id, true)),
            time_stamp: wire::ticks(chrono::Utc::now()),
            state: VNodeState::Leader as i32,
            is_alive: true,
            http_end_point: Some(EndPoint {
                address,
                port: u32::from(port),
            }),
        };
        Ok(Response::new(ClusterInfo {
            members: vec![member],
        }))
    }
}

/// Host and port of an `authority` such as `localhost:2113` or `[::1]:2113`.
fn split_authority(authority: &str) -> (String, u16) {
    match authority.parse::<axum::http::uri::Authority>() {
        Ok(a) => {
            let host = a.host().trim_start_matches('[').trim_end_matches(']');
            (host.to_owned(), a.port_u16().unwrap_or(DEFAULT_PORT))
        }
        Err(_) => (authority.to_owned(), DEFAULT_PORT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(
            split_authority("localhost:2113"),
            ("localhost".into(), 2113)
        );
        assert_eq!(
            split_authority("127.0.0.1:4000"),
            ("127.0.0.1".into(), 4000)
        );
        assert_eq!(split_authority("[::1]:7"), ("::1".into(), 7));
        assert_eq!(split_authority("db.example"), ("db.example".into(), 2113));
    }
}
