//! A homeserver (Synapse, or Conduit for the tests that run on each), an IRC server and the IRC bridge between them,
//! all on loopback, per test.

use std::time::Duration;

use anyhow::Context as _;
pub(crate) use lattice_bridge_irc::config::AuthMethod;
use lattice_bridge_irc::{
    IrcConnector, IrcSection,
    config::{NetworkConfig, ServerConfig},
};
use lattice_config::PermissionsConfig;
use lattice_e2e::{
    Homeserver, HomeserverKind, MatrixUser,
    bridge::RunningBridge,
    ircd::{IrcTestClient, Ircd},
};
use lattice_registration::{RegistrationTemplate, template_regex};
use serde_json::Value;

/// How long anyone waits for what the bridge should make visible.
pub(crate) const WAIT: Duration = Duration::from_secs(30);
/// The bridge admin (register them with [`Fixture::user`]`("admin")`).
pub(crate) const ADMIN: &str = "@admin:localhost";
/// The network ID in the tests' config.
pub(crate) const NET: &str = "test";
/// The bridge bot.
pub(crate) const BOT: &str = "@ircbot:localhost";

/// The homeserver, the IRC server and the bridge; the bridge stops first when dropped.
pub(crate) struct Fixture {
    bridge: RunningBridge<IrcConnector>,
    pub(crate) ircd: Ircd,
    pub(crate) homeserver: Homeserver,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.bridge.connector().shutdown();
    }
}

impl Fixture {
    /// The bridge on ngircd, the plain-IRC server.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        Self::on_homeserver(HomeserverKind::Synapse).await
    }

    /// The bridge on ngircd and a homeserver of `kind`.
    pub(crate) async fn on_homeserver(kind: HomeserverKind) -> anyhow::Result<Self> {
        Self::configured_on(kind, |_| {}).await
    }

    /// The bridge on ngircd, with the test config changed by `configure`.
    pub(crate) async fn configured(configure: impl FnOnce(&mut IrcSection)) -> anyhow::Result<Self> {
        Self::configured_on(HomeserverKind::Synapse, configure).await
    }

    /// [`Fixture::configured`] on a homeserver of `kind`.
    pub(crate) async fn configured_on(
        kind: HomeserverKind,
        configure: impl FnOnce(&mut IrcSection),
    ) -> anyhow::Result<Self> {
        Self::start_with(kind, Ircd::ngircd().await?, AuthMethod::None, configure).await
    }

    /// The bridge on InspIRCd with atheme services; puppets log in with stored passwords by `auth`.
    pub(crate) async fn inspircd(auth: AuthMethod) -> anyhow::Result<Self> {
        Self::inspircd_on(HomeserverKind::Synapse, auth).await
    }

    /// [`Fixture::inspircd`] on a homeserver of `kind`.
    pub(crate) async fn inspircd_on(kind: HomeserverKind, auth: AuthMethod) -> anyhow::Result<Self> {
        Self::start_with(kind, Ircd::inspircd().await?, auth, |_| {}).await
    }

    /// The bridge on InspIRCd with atheme over TLS (trusting the test network's CA, which asks for client
    /// certificates: CertFP); puppets log in with stored credentials by `auth`.
    pub(crate) async fn inspircd_tls(auth: AuthMethod) -> anyhow::Result<Self> {
        let ircd = Ircd::inspircd().await?;
        let port = ircd.tls_port().context("the InspIRCd test network has a TLS port")?;
        let ca_file = ircd.ca_file().display().to_string();
        Self::start_with(HomeserverKind::Synapse, ircd, auth, move |section| {
            for network in section.networks.values_mut() {
                for server in &mut network.servers {
                    server.port = port;
                    server.tls = true;
                }
                network.tls_ca_file = Some(ca_file.clone());
            }
        })
        .await
    }

    /// The bridge on a server the test started, with the test config changed by `configure`.
    pub(crate) async fn on(ircd: Ircd, configure: impl FnOnce(&mut IrcSection)) -> anyhow::Result<Self> {
        Self::start_with(HomeserverKind::Synapse, ircd, AuthMethod::None, configure).await
    }

    async fn start_with(
        kind: HomeserverKind,
        ircd: Ircd,
        auth: AuthMethod,
        configure: impl FnOnce(&mut IrcSection),
    ) -> anyhow::Result<Self> {
        let mut section = IrcSection::default();
        let mut network = NetworkConfig::new(
            "Test IRC",
            vec![ServerConfig { host: "127.0.0.1".into(), port: ircd.port(), tls: false, password: None }],
        );
        network.flood.burst = 100;
        network.flood.lines_per_second = 100.0;
        network.reconnect.initial_delay_ms = 200;
        network.reconnect.max_delay_secs = 2;
        network.max_nick_length = 30;
        network.auth = auth;
        section.networks.insert(NET.into(), network);
        configure(&mut section);
        let user_regexes = vec![template_regex(&section.user_template, "localhost")];
        let alias_regexes = vec![template_regex(&section.alias_template, "localhost")];
        let template = |url| RegistrationTemplate {
            id: "lattice-irc-test".into(),
            url,
            sender_localpart: "ircbot".into(),
            user_regexes,
            alias_regexes,
            protocols: vec!["irc".into()],
            receive_ephemeral: true,
        };
        let permissions = PermissionsConfig { admins: vec![ADMIN.into()], ..PermissionsConfig::default() };
        let (homeserver, bridge) =
            RunningBridge::start(kind, template, &permissions, move |_| IrcConnector::new(section.clone())).await?;
        Ok(Self { bridge, ircd, homeserver })
    }

    /// Stops the bridge (its IRC connections quit) and starts it again on the same store and address.
    pub(crate) async fn restart_bridge(&mut self) -> anyhow::Result<()> {
        self.bridge.connector().shutdown();
        self.bridge.restart().await
    }

    pub(crate) async fn user(&self, localpart: &str) -> anyhow::Result<MatrixUser> {
        self.homeserver.register_user(localpart).await
    }

    /// `nick` on IRC in `channel`, and the new Matrix user `localpart` in its portal room.
    pub(crate) async fn meet(
        &self,
        nick: &str,
        localpart: &str,
        channel: &str,
    ) -> anyhow::Result<(IrcTestClient, MatrixUser, String)> {
        let irc = IrcTestClient::connect(self.ircd.port(), nick).await?;
        irc.join(channel).await?;
        let user = self.user(localpart).await?;
        let room = user.join(&alias(channel)).await.context("joining the portal by alias")?;
        Ok((irc, user, room))
    }

    /// [`Fixture::meet`], and the Matrix user's puppet in the channel: their `first_words` reached `nick`.
    pub(crate) async fn talking(
        &self,
        nick: &str,
        localpart: &str,
        channel: &str,
        first_words: &str,
    ) -> anyhow::Result<(IrcTestClient, MatrixUser, String)> {
        let (irc, user, room) = self.meet(nick, localpart, channel).await?;
        user.send_text(&room, first_words).await?;
        irc.wait_for(WAIT, privmsg_from(localpart, &format!("PRIVMSG {channel} :{first_words}")))
            .await
            .context("the Matrix user's first words reach IRC")?;
        Ok((irc, user, room))
    }

    /// The bridge's HTTP base URL (appservice API, provisioning API).
    pub(crate) fn url(&self) -> String {
        self.bridge.url()
    }
}

/// A private room `owner` creates with the bridge bot invited (power level 50: it may kick and ban), once the bot
/// has joined.
pub(crate) async fn room_with_bot(owner: &MatrixUser, name: &str) -> anyhow::Result<String> {
    room_with_bot_at(owner, name, 50).await
}

/// [`room_with_bot`] with the bot at power level `level`.
pub(crate) async fn room_with_bot_at(owner: &MatrixUser, name: &str, level: i64) -> anyhow::Result<String> {
    let room = owner
        .create_room(serde_json::json!({
            "preset": "private_chat",
            "name": name,
            "invite": [BOT],
            "power_level_content_override": {"users": {BOT: level}},
        }))
        .await?;
    owner
        .wait_for_event(&room, WAIT, |event| {
            event["type"] == "m.room.member" && event["state_key"] == BOT && event["content"]["membership"] == "join"
        })
        .await
        .context("the bot accepts the invite")?;
    Ok(room)
}

/// Checks that `room` and `channel` are bridged both ways: a line from `irc` reaches `user` from its ghost, and a
/// message from `user` reaches IRC from their puppet (named after their localpart).
pub(crate) async fn assert_bridged(
    irc: &IrcTestClient,
    user: &MatrixUser,
    room: &str,
    channel: &str,
) -> anyhow::Result<()> {
    let from_irc = format!("hello from {} in {channel}", irc.nick());
    irc.send(&format!("PRIVMSG {channel} :{from_irc}")).await?;
    let seen = user.wait_for_message(room, WAIT, &from_irc).await?;
    assert_eq!(seen["sender"], ghost(irc.nick()));
    let localpart = user.user_id().trim_start_matches('@').split(':').next().unwrap_or_default();
    let from_matrix = format!("hello from {localpart} in {room}");
    user.send_text(room, &from_matrix).await?;
    irc.wait_for(WAIT, privmsg_from(localpart, &format!("PRIVMSG {channel} :{from_matrix}")))
        .await
        .context("the Matrix message reaches IRC")?;
    Ok(())
}

/// Waits until `witness` sees `member`'s membership in `room` become `membership`, and returns the event.
pub(crate) async fn wait_for_member(
    witness: &MatrixUser,
    room: &str,
    member: &str,
    membership: &str,
) -> anyhow::Result<Value> {
    witness
        .wait_for_event(room, WAIT, |event| {
            event["type"] == "m.room.member"
                && event["state_key"] == member
                && event["content"]["membership"] == membership
        })
        .await
        .with_context(|| format!("waiting for {member} to {membership}"))
}

/// `irc` changes its nick to `new`, and `user` sees the display name of its ghost (named after the nick it
/// connected with) follow in `room`.
pub(crate) async fn change_nick(irc: &IrcTestClient, new: &str, user: &MatrixUser, room: &str) -> anyhow::Result<()> {
    irc.send(&format!("NICK {new}")).await?;
    user.wait_for_event(room, WAIT, |event| {
        event["type"] == "m.room.member"
            && event["state_key"] == ghost(irc.nick())
            && event["content"]["displayname"] == new
    })
    .await
    .context("the ghost's display name follows the nick")?;
    Ok(())
}

/// Whether `event` is a notice from the bridge bot containing `text`.
pub(crate) fn is_bot_notice(event: &Value, text: &str) -> bool {
    event["type"] == "m.room.message"
        && event["sender"] == BOT
        && event["content"]["msgtype"] == "m.notice"
        && event["content"]["body"].as_str().is_some_and(|body| body.contains(text))
}

/// The ghost user ID of an IRC nick.
pub(crate) fn ghost(nick: &str) -> String {
    format!("@irc_{NET}_{nick}:localhost")
}

/// The portal alias of a channel.
pub(crate) fn alias(channel: &str) -> String {
    format!("#irc_{NET}_{channel}:localhost")
}

pub(crate) fn is_message(event: &Value, sender: &str, body: &str) -> bool {
    event["type"] == "m.room.message" && event["sender"] == sender && event["content"]["body"] == body
}

/// Matches an IRC line from `nick` that ends with `rest` (e.g. `PRIVMSG #chan :text`), whatever its IRCv3 tags.
pub(crate) fn privmsg_from<'a>(nick: &'a str, rest: &'a str) -> impl Fn(&str) -> bool + 'a {
    move |line: &str| untagged(line).starts_with(&format!(":{nick}!")) && line.ends_with(rest)
}

/// An IRC line without its IRCv3 tags.
pub(crate) fn untagged(line: &str) -> &str {
    match line.strip_prefix('@') {
        Some(tagged) => tagged.split_once(' ').map_or("", |(_, rest)| rest),
        None => line,
    }
}
