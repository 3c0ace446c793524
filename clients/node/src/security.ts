/**
 * Transport and caller credentials shared by ExecplanClient and Worker (the same
 * options and environment fallbacks as the Python SDK, docs/security.md):
 *
 *     new ExecplanClient(addr, { tlsCa: "ca.pem", token: process.env.MY_TOKEN });
 *     new Worker({ address, tlsCa, tlsCert: "worker.pem", tlsKey: "worker.key" });
 *
 * Options left empty come from $EXECPLAN_TLS_CA, $EXECPLAN_TLS_CERT,
 * $EXECPLAN_TLS_KEY (PEM paths) and $EXECPLAN_TOKEN. TLS is on as soon as a CA or a
 * client certificate is given (no CA: the system roots); a certificate and key make
 * it mutual TLS. A token is sent as `authorization: Bearer <token>` on every call and
 * stream: as call credentials combined with the TLS channel credentials, or, on a
 * plaintext channel (where grpc-js refuses call credentials), by a client
 * interceptor.
 */
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";

export const TLS_CA_ENV = "EXECPLAN_TLS_CA";
export const TLS_CERT_ENV = "EXECPLAN_TLS_CERT";
export const TLS_KEY_ENV = "EXECPLAN_TLS_KEY";
export const TOKEN_ENV = "EXECPLAN_TOKEN";

/** A PEM file path, or the PEM itself (a Buffer, or a string starting `-----BEGIN`). */
export type Pem = string | Buffer;

export interface SecurityOptions {
  /** CA that signed the server certificate; turns on TLS. Default $EXECPLAN_TLS_CA. */
  tlsCa?: Pem;
  /** Client certificate chain, for mutual TLS (with tlsKey). Default $EXECPLAN_TLS_CERT. */
  tlsCert?: Pem;
  /** Client private key (with tlsCert). Default $EXECPLAN_TLS_KEY. */
  tlsKey?: Pem;
  /** Bearer token sent on every call and stream. Default $EXECPLAN_TOKEN. */
  token?: string;
  /**
   * Channel credentials to use as they are instead of tlsCa/tlsCert/tlsKey (the
   * token is still added, by an interceptor).
   */
  credentials?: grpc.ChannelCredentials;
}

/** What a grpc-js client constructor needs: credentials and client options. */
export interface Transport {
  credentials: grpc.ChannelCredentials;
  /** Client interceptors (the token on a plaintext channel). */
  interceptors: grpc.Interceptor[];
  tls: boolean;
}

function readPem(pem: Pem | undefined): Buffer | null {
  if (pem === undefined || pem === "") return null;
  if (Buffer.isBuffer(pem)) return pem;
  if (pem.trimStart().startsWith("-----BEGIN")) return Buffer.from(pem);
  return readFileSync(pem);
}

/** A client interceptor adding the bearer token to every call's metadata. */
export function bearerInterceptor(token: string): grpc.Interceptor {
  const header = `Bearer ${token}`;
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", header);
        next(metadata, listener);
      },
    });
}

/** Credentials and interceptors for `options` completed from the environment. */
export function transport(options: SecurityOptions = {}): Transport {
  const env = process.env;
  const tlsCa = options.tlsCa || env[TLS_CA_ENV] || undefined;
  const tlsCert = options.tlsCert || env[TLS_CERT_ENV] || undefined;
  const tlsKey = options.tlsKey || env[TLS_KEY_ENV] || undefined;
  const token = options.token || env[TOKEN_ENV] || undefined;
  if (options.credentials) {
    return { credentials: options.credentials, interceptors: token ? [bearerInterceptor(token)] : [], tls: options.credentials._isSecure() };
  }
  if (Boolean(tlsCert) !== Boolean(tlsKey)) throw new TypeError("tlsCert and tlsKey go together");
  if (!tlsCa && !tlsCert) {
    return { credentials: grpc.credentials.createInsecure(), interceptors: token ? [bearerInterceptor(token)] : [], tls: false };
  }
  const ssl = grpc.credentials.createSsl(readPem(tlsCa), readPem(tlsKey), readPem(tlsCert));
  if (!token) return { credentials: ssl, interceptors: [], tls: true };
  const header = `Bearer ${token}`;
  const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", header);
    callback(null, metadata);
  });
  return { credentials: grpc.credentials.combineChannelCredentials(ssl, bearer), interceptors: [], tls: true };
}
