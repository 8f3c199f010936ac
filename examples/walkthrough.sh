#!/usr/bin/env bash
# The README's walk-through, runnable as written against a running system:
#
#   scripts/up && source .run/env && examples/walkthrough.sh
#
# It creates a tenant (TENANT, default a fresh name, so it can run again), captures its API key
# with jq, has ingest mint a browser token, connects a WebSocket client outside the browser
# (examples/listen.mjs, Node.js), publishes one event and a batch, and prints what the client got.
# Needs curl, jq and node (20 or newer). The tests run it (system-tests, walkthrough).
set -euo pipefail

: "${SB_INGEST_URL:?set it, e.g. source .run/env after scripts/up}"
: "${SB_GATEWAY_URL:?set it, e.g. source .run/env after scripts/up}"
: "${SB_ADMIN_TOKEN:?set it, e.g. source .run/env after scripts/up}"
for tool in curl jq node; do
  command -v "$tool" >/dev/null || {
    echo "walkthrough: $tool is needed (apt-get install $tool)" >&2
    exit 1
  }
done
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TENANT=${TENANT:-demo-$(date +%s)-$RANDOM}

# 1. An operator creates a tenant. Its api_key and signing_secret are shown only in this answer.
created=$(curl -sS --fail-with-body -X POST "$SB_INGEST_URL/v1/admin/tenants" \
  -H "Authorization: Bearer $SB_ADMIN_TOKEN" -H 'content-type: application/json' \
  -d "$(jq -n --arg id "$TENANT" '{id: $id, name: "Walk-through"}')")
API_KEY=$(jq -r .api_key <<<"$created")
echo "1. tenant $TENANT created; its API key is captured in API_KEY"

# 2. The tenant's backend gets a browser token for user-42 (it could sign the same HS256 JWT
#    itself with the signing secret): read in lobby and user:42, presence in user:42.
TOKEN=$(curl -sS --fail-with-body -X POST "$SB_INGEST_URL/v1/tenants/$TENANT/tokens" \
  -H "Authorization: Bearer $API_KEY" -H 'content-type: application/json' \
  -d '{"sub": "user-42", "rooms": {"lobby": ["read"], "user:42": ["read", "presence"]}}' |
  jq -r .token)
echo "2. browser token minted for user-42"

# 3. A client joins both rooms and prints what it gets, until it has seen 4 events: its own
#    presence.joined in user:42 (it holds presence there), then the three published below.
frames=$(mktemp)
trap 'rm -f "$frames"' EXIT
node_flags=()
node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' || node_flags=(--experimental-websocket)
node "${node_flags[@]}" "$here/listen.mjs" "$SB_GATEWAY_URL" "$TOKEN" lobby,user:42 4 >"$frames" &
client=$!
for _ in $(seq 100); do
  (($(grep -c '"type":"joined"' "$frames" || true) == 2)) && break
  sleep 0.1
done
echo "3. client joined lobby and user:42"

# 4. The backend publishes; the answer comes once JetStream has stored the event. seq is the
#    event's position in one stream that every room of every tenant shares: expect any number.
curl -sS --fail-with-body -X POST "$SB_INGEST_URL/v1/tenants/$TENANT/rooms/lobby/events" \
  -H "Authorization: Bearer $API_KEY" -H 'content-type: application/json' \
  -H 'Idempotency-Key: greeting-1' \
  -d '{"event": "chat.message", "data": {"text": "hello"}}' | jq -c '{"4. stored": .}'

# 5. Many events at once, stored all or none and answered in request order.
curl -sS --fail-with-body -X POST "$SB_INGEST_URL/v1/tenants/$TENANT/events" \
  -H "Authorization: Bearer $API_KEY" -H 'content-type: application/json' \
  -d '{"events": [{"room": "lobby", "event": "a.b", "data": 1}, {"room": "user:42", "event": "a.b", "data": 2}]}' |
  jq -c '{"5. stored": .}'

wait "$client"
echo "6. the client got:"
jq -c 'select(.type != "welcome")' "$frames"
