//! One ordered path out of a connection: a client that pauses gets its
//! whole backlog once it reads again, in order, even in a room that has
//! gone quiet; an ack never overtakes the events before it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp, join, spawn_app};

/// Publishes `n` events of about `pad` bytes to `room` as one batch per
/// `per_batch`, and answers their seqs.
async fn publish_many(
    app: &TestApp,
    t: &Tenant,
    room: &str,
    n: usize,
    pad: usize,
    per_batch: usize,
) -> Vec<u64> {
    let pad = "p".repeat(pad);
    let mut seqs = Vec::new();
    for start in (0..n).step_by(per_batch) {
        let events: Vec<Value> = (start..(start + per_batch).min(n))
            .map(|i| json!({"room": room, "event": "bulk.item", "data": {"i": i, "pad": pad}}))
            .collect();
        let body = app.post_batch(t, events).await;
        seqs.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|it| it["seq"].as_u64().unwrap()),
        );
    }
    seqs
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_client_gets_its_whole_tail_when_it_reads_again_in_a_quiet_room() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut c = app.connect(&t, "tab", json!({"feed": ["read"]})).await;
    let joined = join(&mut c, "feed").await;
    // The client stops reading (a busy tab) while 300 events of ~40 KB —
    // 12 MB, more than the socket buffers hold — are published; the room
    // then stays quiet.
    let seqs = publish_many(&app, &t, "feed", 300, 40 * 1024, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut prev = joined["seq"].as_u64().unwrap();
    for (i, seq) in seqs.iter().enumerate() {
        let ev = c.next_of_type("event").await;
        assert_eq!(ev["data"]["i"], i, "every event, in order");
        assert_eq!(ev["seq"], *seq);
        assert_eq!(ev["prev"], prev, "a whole prev chain");
        prev = *seq;
    }
    c.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ack_takes_its_place_in_the_rooms_order_behind_queued_events() {
    let app = spawn_app().await;
    let t = app.create_tenant().await;
    let mut a = app
        .connect(&t, "alice", json!({"doc": ["read", "publish"]}))
        .await;
    let joined = join(&mut a, "doc").await;
    // Alice falls behind: 12 MB of events wait for her...
    let seqs = publish_many(&app, &t, "doc", 300, 40 * 1024, 20).await;
    // ...when she publishes without echo. The ack stands in for her event:
    // it must come after every earlier event and before any later one.
    a.send_json(
        json!({"op": "publish", "room": "doc", "event": "client.note", "data": 1,
        "echo": false, "id": "mine"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = publish_many(&app, &t, "doc", 5, 10, 5).await;
    let mut held = joined["seq"].as_u64().unwrap();
    let mut ack_seq = None;
    let total = seqs.len() + later.len() + 1;
    for _ in 0..total {
        let f = a.next_frame().await;
        match f["type"].as_str() {
            Some("event") => {
                assert_eq!(f["prev"], held, "the chain is whole around the ack: {f}");
                held = f["seq"].as_u64().unwrap();
            }
            Some("ack") => {
                assert_eq!(f["ref"], "mine");
                let seq = f["seq"].as_u64().unwrap();
                assert!(seq > held, "the ack came before an earlier event");
                assert_eq!(
                    held,
                    *seqs.last().unwrap(),
                    "every event stored before the publish came first"
                );
                ack_seq = Some(seq);
                held = seq;
            }
            _ => panic!("unexpected frame {f}"),
        }
    }
    assert!(ack_seq.is_some());
    assert_eq!(held, *later.last().unwrap());
    a.assert_silent(Duration::from_millis(300)).await;
}
