/*
 * The manual page dvipa(8), rendered from the --help of every command so the two never
 * disagree: `node dist/src/cli/manpage.js VERSION DATE > dvipa.8` (the package build runs it).
 */
import { dvipaParser } from './parser.js';

/** What `dvipa PATH... --help` prints, without printing it or exiting. */
async function help(path: string[]): Promise<string> {
  // 72 columns: what an 80-column terminal shows of an indented block of the page.
  const parser = await dvipaParser([], 72);
  return new Promise((resolve, reject) => {
    void parser.parse([...path, '--help'], {}, (err, _argv, output) => {
      if (err) reject(err);
      else resolve(output);
    });
  });
}

/** The subcommands a help text lists: `  dvipa fastpath attach <iface>  ...` gives ['fastpath', 'attach']. */
export function subcommands(text: string): string[][] {
  const list = text.split('\nCommands:\n')[1]?.split('\n\n')[0] ?? '';
  return list.split('\n').flatMap((line) => {
    const m = /^ {2}dvipa ((?:[\w-]+ ?)+)/.exec(line);
    return m ? [m[1].trim().split(' ')] : [];
  });
}

/** Every command that does something (a leaf of the tree) with its help. */
async function leaves(path: string[]): Promise<Array<{ path: string[]; text: string }>> {
  const text = await help(path);
  const subs = subcommands(text);
  if (!subs.length) return [{ path, text }];
  return (await Promise.all(subs.map((s) => leaves(s)))).flat();
}

/** Text as roff sees it: backslashes escaped, ASCII hyphens (copy-pasteable options), no control lines. */
const roff = (s: string) =>
  s
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/^([.'])/gm, '\\&$1');

/** The help of one command without the usage line (the section title) and the two options every command has. */
function body(text: string): string {
  return text
    .split('\n')
    .slice(1)
    .filter((l) => !/^\s+(--version|-h, --help)\s/.test(l))
    .join('\n')
    .replace(/\nOptions:\n*$/, '')
    .trim();
}

export async function manpage(version: string, date: string): Promise<string> {
  const top = await help([]);
  const commands = await leaves([]);
  const out = [
    `.TH DVIPA 8 "${date}" "dvipa ${roff(version)}" "System Administration"`,
    '.SH NAME',
    'dvipa \\- Sysplex Distributor style dynamic VIPAs for Linux edge routers (XDP data path)',
    '.SH SYNOPSIS',
    '.B dvipa',
    '.I command',
    '.RI [ options ]',
    '.SH DESCRIPTION',
    'A routing node distributes the connections to a dynamic virtual IP address (DVIPA) over',
    'target nodes with an XDP program; agents on every node keep its tables equal to the',
    'listeners and move the DVIPA to a backup when its owner fails. Every command has',
    '.BR \\-\\-help ;',
    '.B \\-\\-version',
    'prints the version. The commands:',
    '.PP',
    '.nf',
    roff(top.split('\nCommands:\n')[1].split('\n\n')[0]),
    '.fi',
    '.SH COMMANDS',
    ...commands.flatMap((c) => [`.SS "dvipa ${c.path.join(' ')}"`, '.nf', roff(body(c.text)), '.fi']),
    '.SH EXIT STATUS',
    '0 success, 1 the operation failed, 2 bad usage or bad input (arguments, files),',
    '3 no agent answers on the control socket, 4 not permitted (not root).',
    '.SH FILES',
    '.TP',
    '.I /etc/dvipa/cluster.cfg',
    'the cluster configuration (VIPADynamic language or YAML), the same on every node',
    '.TP',
    '.I /etc/dvipa/cluster.key',
    'the cluster key, at least 32 random bytes, mode 0600, the same on every node',
    '.TP',
    '.I /etc/default/dvipa',
    "the agent service's node name and options",
    '.TP',
    '.I /sys/fs/bpf/dvipa',
    'the pinned programs, links and maps; forwarding goes on while the agent restarts',
    '.TP',
    '.I /run/dvipa/agent.sock',
    "the agent's control socket, read by",
    '.B dvipa netstat',
    '.TP',
    '.I /usr/share/doc/dvipa/examples/cluster.cfg',
    'an example configuration: a routing pair in front of three targets',
    '.SH SEE ALSO',
    '.BR systemctl (1),',
    '.BR ip (8),',
    '.BR bpftool (8),',
    '.I /usr/share/doc/dvipa/README.md.gz',
  ];
  return `${out.join('\n')}\n`;
}

if (process.argv[1]?.endsWith('manpage.js')) {
  const [version, date] = process.argv.slice(2);
  if (!version || !date) {
    process.stderr.write('usage: manpage.js VERSION YYYY-MM-DD\n');
    process.exit(2);
  }
  process.stdout.write(await manpage(version, date));
}
