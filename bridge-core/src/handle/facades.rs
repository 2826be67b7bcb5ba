//! The narrow views of the store a connector gets from its [`BridgeHandle`]: portals, the message map (with the
//! reactions given to remote messages), ghosts, user
//! settings and sealed credentials — what a connector reads and writes, and nothing of the queues, transactions or
//! the store's own bookkeeping, which are the runtime's.

use crate::{
    BridgeHandle,
    store::{Ghost, MessageMapping, Portal, Result, Store},
};

impl BridgeHandle {
    /// The portals: which remote conversation has which room.
    pub fn portals(&self) -> Portals<'_> {
        Portals(&self.core().store)
    }

    /// The message map: which remote message a Matrix event became, and back.
    pub fn messages(&self) -> Messages<'_> {
        Messages(&self.core().store)
    }

    /// The ghosts: which remote person has which Matrix user.
    pub fn ghosts(&self) -> Ghosts<'_> {
        Ghosts(&self.core().store)
    }

    /// Matrix users' settings (a chosen nick, say) and their admin rooms.
    pub fn settings(&self) -> Settings<'_> {
        Settings(&self.core().store)
    }

    /// Matrix users' secrets for the remote network (passwords, certificates), sealed at rest.
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials(&self.core().store)
    }
}

/// See [`BridgeHandle::portals`].
#[derive(Debug, Clone, Copy)]
pub struct Portals<'a>(&'a Store);

impl Portals<'_> {
    /// Every portal, by remote key.
    pub async fn all(self) -> Result<Vec<Portal>> {
        self.0.portals().await
    }

    /// The portal of a remote conversation.
    pub async fn by_key(self, remote_key: &str) -> Result<Option<Portal>> {
        self.0.portal_by_key(remote_key).await
    }

    /// The portal a room is.
    pub async fn by_room(self, room_id: &str) -> Result<Option<Portal>> {
        self.0.portal_by_room(room_id).await
    }

    /// Records a portal (a room the connector made a portal of itself, such as a direct chat).
    pub async fn upsert(self, portal: &Portal) -> Result<()> {
        self.0.upsert_portal(portal).await
    }

    /// Forgets a portal; `true` if there was one.
    pub async fn delete(self, remote_key: &str) -> Result<bool> {
        self.0.delete_portal(remote_key).await
    }

    /// Records the topic a portal has now.
    pub async fn set_topic(self, remote_key: &str, topic: Option<&str>) -> Result<()> {
        self.0.set_portal_topic(remote_key, topic).await
    }
}

/// See [`BridgeHandle::messages`].
#[derive(Debug, Clone, Copy)]
pub struct Messages<'a>(&'a Store);

impl Messages<'_> {
    /// The Matrix event a remote message in a portal became (the latest, if the ID was used again).
    pub async fn event_for(self, portal_key: &str, remote_id: &str) -> Result<Option<String>> {
        self.0.event_for_remote(portal_key, remote_id).await
    }

    /// The remote ID in a portal that ends with `suffix`, for networks whose own references name a message by only
    /// part of the ID the connector records.
    pub async fn remote_by_suffix(self, portal_key: &str, suffix: &str) -> Result<Option<String>> {
        self.0.remote_id_by_suffix(portal_key, suffix).await
    }

    /// The remote messages a Matrix event became, oldest first.
    pub async fn remotes_for(self, event_id: &str) -> Result<Vec<MessageMapping>> {
        self.0.remotes_for_event(event_id).await
    }

    /// Records that the network also calls a message `alias` (the sender's own ID of a message the server stamped
    /// with its own); the first record of an alias stays.
    pub fn alias(self, portal_key: &str, alias: &str, remote_id: &str) {
        self.0.alias_remote(portal_key, alias, remote_id);
    }

    /// The remote ID a message is mapped under, given any of its names.
    pub async fn resolve(self, portal_key: &str, name: &str) -> Result<String> {
        self.0.resolve_remote(portal_key, name).await
    }

    /// The other names of a remote message.
    pub async fn aliases(self, portal_key: &str, remote_id: &str) -> Result<Vec<String>> {
        self.0.remote_aliases(portal_key, remote_id).await
    }

    /// The reaction keys `user_id` has given the remote message `target`, in the order first given.
    pub async fn reactions(self, portal_key: &str, target: &str, user_id: &str) -> Result<Vec<String>> {
        self.0.reactions(portal_key, target, user_id).await
    }

    /// Replaces the reaction keys `user_id` has given `target`; an empty set removes the record.
    pub async fn set_reactions(self, portal_key: &str, target: &str, user_id: &str, keys: &[String]) -> Result<()> {
        self.0.set_reactions(portal_key, target, user_id, keys).await
    }

    /// Records another name the network gave a delivered message (an IRC msgid learnt from its echo, a stanza ID
    /// the server stamped). Delivered messages themselves are recorded by the runtime from what the connector's
    /// handler returned.
    pub fn also_known_as(self, mapping: MessageMapping) {
        self.0.map_message(mapping);
    }
}

/// See [`BridgeHandle::ghosts`].
#[derive(Debug, Clone, Copy)]
pub struct Ghosts<'a>(&'a Store);

impl Ghosts<'_> {
    /// The ghost a Matrix user is.
    pub async fn by_user(self, user_id: &str) -> Result<Option<Ghost>> {
        self.0.ghost_by_user(user_id).await
    }

    /// The ghost of a remote person.
    pub async fn by_remote(self, remote_id: &str) -> Result<Option<Ghost>> {
        self.0.ghost_by_remote(remote_id).await
    }

    /// Records a ghost (the remote ID it follows now, after a rename on the network).
    pub async fn upsert(self, ghost: &Ghost) -> Result<()> {
        self.0.upsert_ghost(ghost).await
    }
}

/// See [`BridgeHandle::settings`].
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a>(&'a Store);

impl Settings<'_> {
    /// A user's setting.
    pub async fn get(self, user_id: &str, name: &str) -> Result<Option<String>> {
        self.0.user_setting(user_id, name).await
    }

    /// Sets (or with `None` clears) a user's setting.
    pub async fn set(self, user_id: &str, name: &str, value: Option<&str>) -> Result<()> {
        self.0.set_user_setting(user_id, name, value).await
    }

    /// A user's admin room (their DM with the bridge bot), if they have one.
    pub async fn admin_room(self, user_id: &str) -> Result<Option<String>> {
        self.0.admin_room(user_id).await
    }

    /// Whose admin room a room is, if anyone's.
    pub async fn admin_room_owner(self, room_id: &str) -> Result<Option<String>> {
        self.0.admin_room_owner(room_id).await
    }
}

/// See [`BridgeHandle::credentials`].
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a>(&'a Store);

impl Credentials<'_> {
    /// A user's secret for `network`, unsealed.
    pub async fn get(self, user_id: &str, network: &str) -> Result<Option<String>> {
        self.0.credential(user_id, network).await
    }

    /// Seals and stores a user's secret for `network`.
    pub async fn set(self, user_id: &str, network: &str, secret: &str) -> Result<()> {
        self.0.store_credential(user_id, network, secret).await
    }

    /// Forgets a user's secret for `network`; `true` if there was one.
    pub async fn delete(self, user_id: &str, network: &str) -> Result<bool> {
        self.0.delete_credential(user_id, network).await
    }
}

macro_rules! view_of_store {
    ($($view:ident),*) => {$(
        impl<'a> From<&'a Store> for $view<'a> {
            /// The view over a store opened outside a runtime (tools, tests).
            fn from(store: &'a Store) -> Self {
                Self(store)
            }
        }
    )*};
}

view_of_store!(Portals, Messages, Ghosts, Settings, Credentials);
