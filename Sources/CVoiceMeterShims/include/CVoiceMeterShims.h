// Why this shim exists: Swift cannot import function-like or computed C macros.
// libwebsockets' LWS_PRE (headroom before every lws_write buffer) and OpenSSL's
// SSL_CTX_set_min_proto_version are macros, so they are exposed here as functions.
// Every symbol carries the module name as its prefix.
#ifndef CVOICEMETERSHIMS_H
#define CVOICEMETERSHIMS_H

#include <stddef.h>
#include <openssl/ssl.h>

/// Bytes of headroom libwebsockets needs in front of every buffer passed to lws_write.
size_t CVoiceMeterShims_LWS_PRE(void);

/// Restricts a server TLS context to TLS 1.2 and newer and disables TLS compression.
/// Returns 1 on success, 0 when OpenSSL refused a setting.
int CVoiceMeterShims_harden_tls_context(SSL_CTX *context);

/// SSL_OP_* bits that switch off SSLv3, TLS 1.0, TLS 1.1 and compression, for libwebsockets'
/// `ssl_options_set` (the SSL_OP_* values are macros over SSL_OP_BIT).
long CVoiceMeterShims_tls_legacy_protocol_options(void);

#endif
