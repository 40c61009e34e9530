//! `SessionRegistry` knows every connected live client (WebSocket sessions and SSE
//! streams) and enforces `server.max_clients`. The Supervisor starts it; the HTTP layer
//! registers clients with it. (Event fan-out arrives with the live-events issue.)

use actix::prelude::*;

/// The actor.
pub struct SessionRegistry {
    /// Most clients connected at once; the next one is refused.
    max_clients: u32,
    /// Clients connected now.
    clients: usize,
}

impl SessionRegistry {
    pub fn new(max_clients: u32) -> Self {
        SessionRegistry { max_clients, clients: 0 }
    }
}

impl Actor for SessionRegistry {
    type Context = Context<Self>;
}

/// How many live clients are connected, and the limit.
#[derive(Message, Debug)]
#[rtype(result = "ClientCounts")]
pub struct CountClients;

#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct ClientCounts {
    pub connected: usize,
    pub max: u32,
}

impl Handler<CountClients> for SessionRegistry {
    type Result = MessageResult<CountClients>;

    fn handle(&mut self, _: CountClients, _: &mut Self::Context) -> Self::Result {
        MessageResult(ClientCounts { connected: self.clients, max: self.max_clients })
    }
}
