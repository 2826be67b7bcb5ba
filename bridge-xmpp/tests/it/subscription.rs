//! Presence subscriptions to Matrix users' gateway JIDs (RFC 6121): approved for a Matrix user who exists, with an
//! available presence, answered again when the XMPP server probes at the next login, refused for nobody.

use crate::{
    client::{XmppClient, escape},
    fixture::{Fixture, WAIT},
};

#[tokio::test]
async fn xmpp_users_see_matrix_users_on_their_roster() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    fixture.matrix_user("alice").await?;
    let password = "xavier-password";
    fixture.xmpp.register("xavier", password).await?;
    let port = fixture.xmpp.c2s_port();
    let mut xavier = XmppClient::connect(port, "xavier", password).await?;
    xavier.request_roster().await?;
    let alice = r"alice\40localhost@bridge.localhost";
    let alice_presence = format!("{alice}/matrix");

    xavier.send_raw(&format!("<presence type='subscribe' to='{}'/>", escape(alice))).await?;
    xavier.wait_for_presence(alice, WAIT, |kind| kind == Some("subscribed")).await?;
    xavier.wait_for_presence(&alice_presence, WAIT, |kind| kind.is_none()).await?;

    // The next login: Prosody probes the contact, and the gateway answers for Alice.
    drop(xavier);
    let mut again = XmppClient::connect(port, "xavier", password).await?;
    again.request_roster().await?;
    again.wait_for_presence(&alice_presence, WAIT, |kind| kind.is_none()).await?;

    // No Matrix user behind the JID: the request is refused rather than left pending.
    let nobody = r"nobody\40localhost@bridge.localhost";
    again.send_raw(&format!("<presence type='subscribe' to='{}'/>", escape(nobody))).await?;
    again.wait_for_presence(nobody, WAIT, |kind| kind == Some("unsubscribed")).await?;
    Ok(())
}
