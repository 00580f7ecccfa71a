/**
 * `tls.ciphers`' default (schema.ts uses it), in a module without zod so that the runtime
 * adapters can compare against it without loading the schema.
 *
 * TLS 1.2 suites offered by default: ECDHE key exchange (forward secrecy) with an AEAD
 * cipher only; no plain-RSA key exchange, no CBC with SHA-1. TLS 1.3 suites all qualify
 * and are not configurable in BoringSSL.
 */
export const DEFAULT_TLS_CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");
