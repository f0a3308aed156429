// An independent verifier of Sigstore bundles: sigstore-js (@sigstore/bundle and
// @sigstore/verify from npm) checks BUNDLE with the public key PUB, no transparency log and
// no timestamps required (key-based signing, as `cosign sign --key` without a log).
//
// usage: node sigstore_verify.js BUNDLE.json PUB.pem
// Prints the verified DSSE payload (the in-toto statement) on stdout; exits 1 on refusal.
const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity } = require('@sigstore/verify');

const [bundlePath, pubPath] = process.argv.slice(2);
try {
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const key = crypto.createPublicKey(fs.readFileSync(pubPath, 'utf8'));
  const trust = {
    certificateAuthorities: [],
    timestampAuthorities: [],
    tlogs: [],
    ctlogs: [],
    publicKey: () => ({ publicKey: key, validFor: () => true }),
  };
  const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  verifier.verify(toSignedEntity(bundle));
  const env = bundle.content.dsseEnvelope;
  process.stdout.write(JSON.stringify({ payloadType: env.payloadType, payload: JSON.parse(env.payload.toString('utf8')) }));
} catch (e) {
  process.stderr.write(`refused: ${e.code || ''} ${e.message}\n`);
  process.exit(1);
}
