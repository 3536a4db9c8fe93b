// Fetches every message with node-pop3 (LIST, UIDL, RETR each, QUIT) and
// prints them as JSON on stdout, for test_clients.py.
//
//   node fetch.mjs '{"port": 1110, "user": "u1", "password": "pw",
//                    "tls": true, "ca": "/path/ca.pem"}'
//
// node-pop3 returns a message as it came over the wire between the status
// line and the final "\r\n.\r\n": still dot-stuffed, without its last CRLF.
import {readFileSync} from 'node:fs';
import Pop3Command from 'node-pop3';

const options = JSON.parse(process.argv[2]);
const deadline = setTimeout(() => {
  console.error('fetch.mjs: no answer within 60 s');
  process.exit(2);
}, 60000);

const client = new Pop3Command({
  host: options.host || '127.0.0.1',
  port: options.port,
  tls: Boolean(options.tls),
  tlsOptions: options.ca ? {ca: readFileSync(options.ca)} : {},
  servername: 'localhost',
  user: options.user,
  password: options.password,
  timeout: 30000,
});

try {
  const list = await client.LIST();
  const uidl = await client.UIDL();
  const messages = [];
  for (const [number] of list) messages.push(await client.RETR(Number(number)));
  await client.QUIT();
  process.stdout.write(JSON.stringify({list, uidl, messages}));
  clearTimeout(deadline);
} catch (error) {
  console.error('fetch.mjs:', error);
  process.exit(1);
}
