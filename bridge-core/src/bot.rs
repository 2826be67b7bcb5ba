//! The bridge bot (the registration's `sender_localpart`): accepts invites from permitted users, keeps one admin
//! room per user (their DM with the bot), and runs commands typed there or after the prefix in portals.
//!
//! Everything the bot sends in answer to an event carries a transaction ID derived from that event, so an event
//! handled again after a crash (its queue item's removal not yet committed) is not answered twice.

use lattice_config::PermissionLevel;
use ruma::OwnedRoomId;
use serde_json::json;

use crate::{
    Result,
    commands::{self, BUILT_IN},
    connector::{CommandContext, Connector},
    error::parse_id,
    event::{MatrixEvent, MatrixEventKind},
    runtime::Runtime,
};

/// Handles what the bot cares about; returns whether the event was consumed (and must not reach the connector).
pub(crate) async fn handle<C: Connector>(runtime: &Runtime<C>, event: &MatrixEvent) -> Result<bool> {
    let handle = &runtime.handle;
    let Some(sender) = event.sender.as_deref() else { return Ok(false) };
    match &event.kind {
        MatrixEventKind::Membership { user_id, membership, is_direct, .. }
            if *user_id == handle.bot_user_id() && membership == "invite" =>
        {
            accept_invite(runtime, event, sender, *is_direct).await?;
            Ok(true)
        }
        MatrixEventKind::Message(message) if !handle.is_bridge_user(sender) => {
            let store = handle.store();
            // A portal is never an admin room, and its (cached) lookup spares the common case a query.
            let in_admin_room = store.portal_by_room(&event.room_id).await?.is_none()
                && store.admin_room_owner(&event.room_id).await?.as_deref() == Some(sender);
            let body = crate::formatting::render_plain(&message.text);
            let prefix = handle.core().info.command_prefix;
            let Some(line) = commands::command_line(&body, prefix, in_admin_room) else { return Ok(false) };
            let reply = run_command(runtime, event, sender, line).await;
            // Keyed by the command's event, so a command handled again after a crash is answered once.
            match event.event_id.as_deref() {
                Some(command) => handle.reply_notice(&event.room_id, command, &reply).await?,
                None => handle.notice(&event.room_id, &reply).await?,
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

async fn accept_invite<C: Connector>(
    runtime: &Runtime<C>,
    event: &MatrixEvent,
    sender: &str,
    is_direct: bool,
) -> Result<()> {
    let handle = &runtime.handle;
    let room: OwnedRoomId = parse_id("room ID", &event.room_id)?;
    let bot = handle.bot()?;
    bot.ensure_registered().await?;
    if handle.permission_level(sender) < PermissionLevel::User {
        tracing::info!(%sender, room_id = %room, "refusing an invite from a user without permission");
        bot.ensure_joined(&room).await?;
        bot.leave(&room).await?;
        return Ok(());
    }
    bot.ensure_joined(&room).await?;
    if is_direct {
        handle.store().set_admin_room(sender, room.as_str()).await?;
        let info = &handle.core().info;
        let welcome = format!(
            "Hello! I am the Lattice {} bridge bot. This is your admin room: send `help` for the commands.",
            info.protocol_name
        );
        let txn_id = format!("lattice.welcome.{}", event.event_id.as_deref().unwrap_or_default());
        bot.send_message_event(
            &room,
            "m.room.message",
            &json!({"msgtype": "m.notice", "body": welcome}),
            &txn_id,
            None,
        )
        .await?;
    }
    tracing::info!(%sender, room_id = %room, is_direct, "accepted an invite");
    Ok(())
}

/// Runs one command line and returns the reply text (errors included, as the user should read them).
async fn run_command<C: Connector>(runtime: &Runtime<C>, event: &MatrixEvent, sender: &str, line: &str) -> String {
    let handle = &runtime.handle;
    let info = &handle.core().info;
    let words = match commands::split_words(line) {
        Ok(words) => words,
        Err(error) => return format!("⚠ Cannot read that command: {error}."),
    };
    let Some((name, args)) = words.split_first() else { return "Send `help` for the commands.".into() };
    let name = name.to_lowercase();
    let level = handle.permission_level(sender);
    let mut all = BUILT_IN.to_vec();
    all.extend(runtime.connector.commands());
    let Some(spec) = all.iter().find(|spec| spec.name == name) else {
        return format!("Unknown command `{name}`. Send `help` for the list.");
    };
    if level == PermissionLevel::None {
        return "⚠ You are not allowed to use this bridge.".into();
    }
    if level < spec.level {
        return format!("⚠ `{name}` is for bridge admins only.");
    }
    match spec.name {
        "help" => commands::help(info, &all, level, args.first().map(String::as_str)),
        "version" => format!("Lattice {} bridge, version {}", info.protocol_name, crate::cli::VERSION),
        "portals" => match handle.store().portals().await {
            Ok(portals) if portals.is_empty() => "No bridged rooms yet.".into(),
            Ok(portals) => portals
                .iter()
                .map(|portal| {
                    format!("• {} ⇄ {}", portal.remote_key, portal.alias.as_deref().unwrap_or(&portal.room_id))
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(error) => format!("⚠ Cannot list portals: {error}"),
        },
        _ => {
            let portal = handle.store().portal_by_room(&event.room_id).await.ok().flatten();
            let context = CommandContext {
                sender: sender.to_owned(),
                room_id: event.room_id.clone(),
                portal,
                level,
                args: args.to_vec(),
            };
            match runtime.connector.run_command(spec.name, context).await {
                Ok(reply) => reply,
                Err(error) => format!("⚠ {error}"),
            }
        }
    }
}
