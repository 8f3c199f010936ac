// A WebSocket client outside the browser, with the browser's own WebSocket API (Node 22 or
// newer; Node 20 with --experimental-websocket): connects with a browser token, joins rooms,
// prints every frame it gets as one JSON line, and exits once it has seen COUNT events.
//
//   node examples/listen.mjs GATEWAY_URL TOKEN ROOM[,ROOM…] COUNT
const [gateway, token, rooms, count] = process.argv.slice(2);
if (!gateway || !token || !rooms || !count) {
  console.error("usage: node examples/listen.mjs GATEWAY_URL TOKEN ROOM[,ROOM...] COUNT");
  process.exit(2);
}
const want = Number(count);
// The token travels as a subprotocol, as browsers send it.
const ws = new WebSocket(gateway.replace(/^http/, "ws") + "/v1/ws", [
  "switchboard.v1",
  "bearer." + token,
]);
let events = 0;
ws.onopen = () =>
  rooms.split(",").forEach((room, i) => ws.send(JSON.stringify({ op: "join", room, id: i + 1 })));
ws.onmessage = (m) => {
  console.log(m.data);
  const frame = JSON.parse(m.data);
  if (frame.type === "event" && ++events >= want) ws.close(1000);
};
ws.onerror = (e) => console.error("websocket error:", e.message ?? e);
ws.onclose = () => process.exit(events >= want ? 0 : 1);
setTimeout(() => {
  console.error(`timed out with ${events} of ${want} events`);
  process.exit(1);
}, 20000);
