/*
 * A target's application in the lab and the namespace tests: every line received on TCP gets the
 * server's name back; UDP datagrams are counted, and the TCP line "udpcount" returns the
 * count. Usage: name-server NAME TCP_PORT UDP_PORT. Prints "ready" once listening.
 */
import * as net from 'node:net';
import * as dgram from 'node:dgram';
import * as readline from 'node:readline';

const [name, tcpPort, udpPort] = process.argv.slice(2);
let udpCount = 0;

const tcp = net.createServer((sock) => {
  sock.on('error', () => sock.destroy());
  readline
    .createInterface({ input: sock })
    .on('error', () => undefined)
    .on('line', (line) => {
      sock.write(line === 'udpcount' ? `${udpCount}\n` : `${name}\n`);
    });
});
const udp = dgram.createSocket('udp4');
udp.on('message', () => udpCount++);

tcp.listen(Number(tcpPort), () => udp.bind(Number(udpPort), () => process.stdout.write('ready\n')));
