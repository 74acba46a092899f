/* Reads a configuration file in either form: YAML by its extension, else the VIPADynamic language. */
import * as fs from 'node:fs';
import { ConfigError, type ClusterConfig } from './model.js';
import { parseProfile } from './profile.js';
import { parseYamlConfig } from './yaml.js';

export function isYamlFile(file: string): boolean {
  return /\.(ya?ml|json)$/i.test(file);
}

export function loadConfig(file: string): ClusterConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(file, [
      { line: 1, column: 1, message: code === 'ENOENT' ? 'no such file' : (e as Error).message },
    ]);
  }
  return isYamlFile(file) ? parseYamlConfig(text, file) : parseProfile(text, file);
}
