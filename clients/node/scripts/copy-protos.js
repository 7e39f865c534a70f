// Copies the API's .proto files from the repository's proto/ into this
// package's proto/ (shipped with the package, loaded at run time by
// @grpc/proto-loader). Never edit the copies: they are replaced on every
// build, and proto/ is ignored by git.
'use strict';
const fs = require('fs');
const path = require('path');

const source = path.resolve(__dirname, '..', '..', '..', 'proto', 'ffid', 'v1');
const target = path.resolve(__dirname, '..', 'proto', 'ffid', 'v1');

if (!fs.existsSync(source)) {
  // Installed from a packed tarball: the copies it ships are used.
  if (fs.existsSync(target)) process.exit(0);
  console.error(`copy-protos: ${source} does not exist and the package has no proto/`);
  process.exit(1);
}
fs.rmSync(path.resolve(__dirname, '..', 'proto'), { recursive: true, force: true });
fs.mkdirSync(target, { recursive: true });
for (const name of fs.readdirSync(source)) {
  if (name.endsWith('.proto')) {
    fs.copyFileSync(path.join(source, name), path.join(target, name));
  }
}
