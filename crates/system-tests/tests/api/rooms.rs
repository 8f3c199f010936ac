//! Room names as the design uses them (`user:42`, `quote:9`, `a@b`): every
//! character the room rule allows works for events, presence and state —
//! KV keys escape the ones NATS KV refuses (DESIGN.md §2).

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;
use switchboard_test_support::WsClient;

/// Rooms covering every character of `^[A-Za-z0-9_:@=-]{1,128}$`, including
/// names that look like escapes (`=3A` must stay apart from `:`).
const ROOMS: [&str; 6] = ["user:42", "a@b", "AZaz09_:@=-", "=3A", ":", "x==3A@"];

/// Joins `room`, skipping events of rooms joined before.
async fn join(c: &mut WsClient, room: &str) {
    c.send_json(json!({"op": "join", "room": room, "id": room}))
        .await;
    let joined = c.next_of_type("joined").await;
    assert_eq!(
        (joined["ref"].as_str(), joined["room"].as_str()),
        (Some(room), Some(room))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_and_state_work_in_rooms_with_every_character_the_rule_allows() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let perms = json!({"*": ["read", "presence"]});
    let mut w = app.connect(&t, "watcher", perms.clone()).await;
    for room in ROOMS {
        join(&mut w, room).await;
        let e = w.next_of_type("event").await;
        assert_eq!(
            (
                e["room"].as_str(),
                e["event"].as_str(),
                e["data"]["sub"].as_str()
            ),
            (Some(room), Some("presence.joined"), Some("watcher")),
            "{e}"
        );
    }
    let mut u = app.connect(&t, "u1", perms.clone()).await;
    for (i, room) in ROOMS.iter().enumerate() {
        join(&mut u, room).await;
        let e = w.next_of_type("event").await;
        assert_eq!(
            (
                e["room"].as_str(),
                e["event"].as_str(),
                e["data"]["sub"].as_str()
            ),
            (Some(*room), Some("presence.joined"), Some("u1")),
            "{e}"
        );
        w.send_json(json!({"op": "presence", "room": room, "id": i}))
            .await;
        let p = w.next_of_type("presence").await;
        let subs: Vec<&str> = p["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["sub"].as_str().unwrap())
            .collect();
        assert_eq!(subs, ["u1", "watcher"], "{room}: {p}");
    }

    // State: each room its own, stored and handed to joiners.
    for (i, room) in ROOMS.iter().enumerate() {
        let (status, body) = app
            .call(
                &t,
                Method::PUT,
                &format!("/rooms/{room}/state"),
                Some(json!({"data": {"n": i}})),
            )
            .await;
        assert_eq!(status, 200, "{room}: {body}");
        assert_eq!(body["room"], *room);
    }
    let mut late = app.connect(&t, "late", json!({"*": ["read"]})).await;
    for (i, room) in ROOMS.iter().enumerate() {
        join(&mut late, room).await;
        let s = late.next_frame().await;
        assert_eq!(s["type"], "state", "{room}: {s}");
        assert_eq!(s["room"], *room);
        assert_eq!(s["data"], json!({"n": i}), "{room}");
    }

    // Leaving announces presence.left in the same room.
    u.send_json(json!({"op": "leave", "room": "user:42"})).await;
    loop {
        let e = w.next_of_type("event").await;
        if e["event"] == "presence.left" {
            assert_eq!(
                (e["room"].as_str(), e["data"]["sub"].as_str()),
                (Some("user:42"), Some("u1"))
            );
            break;
        }
    }
    w.assert_silent(Duration::from_millis(200)).await;
}

/// A gateway keeps a room's state for its joiners while the room has
/// members, and reads it again once `state.updated` says it changed: every
/// joiner gets the newest state, never an older one.
#[tokio::test(flavor = "multi_thread")]
async fn joiners_get_the_newest_state_while_the_room_stays_open() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut keeper = app.connect(&t, "keeper", json!({"board": ["read"]})).await;
    crate::helpers::join(&mut keeper, "board").await;
    for version in 1..=3 {
        let (status, put) = app
            .call(
                &t,
                reqwest::Method::PUT,
                "/rooms/board/state",
                Some(json!({"data": {"version": version}})),
            )
            .await;
        assert_eq!(status, 200, "{put}");
        // The keeper's room has seen the update before the next joiner.
        let ev = keeper.next_of_type("event").await;
        assert_eq!(ev["event"], "state.updated");
        let mut c = app.connect(&t, "joiner", json!({"board": ["read"]})).await;
        c.send_json(json!({"op": "join", "room": "board"})).await;
        c.next_of_type("joined").await;
        let state = c.next_of_type("state").await;
        assert_eq!(state["data"]["version"], version, "{state}");
        assert_eq!(state["seq"], put["seq"]);
    }
}
