// Interoperability check: verify a Sakshi evidence bundle's manifest signature with
// sigstore-js (@sigstore/verify), given only the appliance public key. Not part of the
// Rust test suite (it needs Node.js packages); see docs/bench/evidence.md for how it was run.
//
//   npm install @sigstore/verify@3 @sigstore/bundle@4
//   tar -xzf BUNDLE.tar.gz manifest.json manifest.sigstore.json
//   node verify-manifest.js manifest.json manifest.sigstore.json appliance.pub.pem
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');

const [manifestPath, bundlePath, keyPath] = process.argv.slice(2);
if (!keyPath) {
  console.error('usage: node verify-manifest.js manifest.json manifest.sigstore.json appliance.pub.pem');
  process.exit(2);
}
const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
const key = crypto.createPublicKey(fs.readFileSync(keyPath));
// No Fulcio, Rekor or TSA: the only trust is the appliance key, found by its hint.
const root = { mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
  tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [] };
const trust = toTrustMaterial(root, () => ({ publicKey: key, validFor: () => true }));
const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
try {
  verifier.verify(toSignedEntity(bundle, fs.readFileSync(manifestPath)));
  console.log(`OK: ${bundle.mediaType} verified by @sigstore/verify with ${keyPath}`);
} catch (e) {
  console.error(`FAILED: ${e.code || ''} ${e.message}`);
  process.exit(1);
}
