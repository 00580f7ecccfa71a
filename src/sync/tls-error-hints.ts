/**
 * Connection errors in words an operator can act on: TLS failures come as OpenSSL jargon
 * (Bun, MQTT.js) or rustls names (Deno: `invalid peer certificate: UnknownIssuer`), so say
 * which side's certificate is the problem and which setting to check. Shared by both
 * cloud clients (cloud-socket-client.ts and cloud-client.ts).
 */
const TLS_HINTS: Array<[RegExp, string]> = [
  [
    /unable to verify|self[- ]signed|unable to get (local )?issuer|CERT_UNTRUSTED|certificate has expired|UnknownIssuer|\bExpired\b/i,
    "the cloud's certificate is not trusted (check tls.ca)",
  ],
  [
    /Hostname\/IP does not match|ERR_TLS_CERT_ALTNAME|altnames|NotValidForName/i,
    "the cloud's certificate is not for this host name (check the url)",
  ],
  [/CERTIFICATE_?REQUIRED/i, "the cloud requires a client certificate (set tls.cert and tls.key)"],
  [
    /UNKNOWN_?CA|BAD_?CERTIFICATE|CERTIFICATE_?UNKNOWN|DECRYPT_?ERROR/i,
    "the cloud refused the client certificate (tls.cert)",
  ],
];

export function describeError(err: Error): string {
  for (const [pattern, hint] of TLS_HINTS) if (pattern.test(err.message)) return `TLS: ${hint}: ${err.message}`;
  return err.message;
}
