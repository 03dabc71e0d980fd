// Why this shim exists: Swift cannot import function-like or computed C macros.
// libwebsockets' LWS_PRE (headroom before every lws_write buffer), OpenSSL's
// SSL_CTX_set_min_proto_version and libev's loop API (EV_P_ macros) are exposed here as functions.
// Every symbol carries the module name as its prefix.
#ifndef CVOICEMETERSHIMS_H
#define CVOICEMETERSHIMS_H

#include <stddef.h>
#include <openssl/ssl.h>
#include <libwebsockets.h>

/// Bytes of headroom libwebsockets needs in front of every buffer passed to lws_write.
size_t CVoiceMeterShims_LWS_PRE(void);

/// Restricts a server TLS context to TLS 1.2 and newer and disables TLS compression.
/// Returns 1 on success, 0 when OpenSSL refused a setting.
int CVoiceMeterShims_harden_tls_context(SSL_CTX *context);

/// SSL_OP_* bits that switch off SSLv3, TLS 1.0, TLS 1.1 and compression, for libwebsockets'
/// `ssl_options_set` (the SSL_OP_* values are macros over SSL_OP_BIT).
long CVoiceMeterShims_tls_legacy_protocol_options(void);

/// A retry and idle policy with every field zero: lws then keeps no validity timer per connection.
const lws_retry_bo_t *CVoiceMeterShims_no_validity_timers(void);

/// An epoll-backed libev loop for a libwebsockets context (`LWS_SERVER_OPTION_LIBEV` with a
/// foreign loop): lws's default poll() visits every connection on every wake. NULL when libev
/// cannot use epoll. The loop is used and destroyed on the thread that runs it.
void *CVoiceMeterShims_event_loop_create(void);

/// Runs the loop until `CVoiceMeterShims_event_loop_break` is called from one of its callbacks.
void CVoiceMeterShims_event_loop_run(void *loop);

/// Makes `CVoiceMeterShims_event_loop_run` return (call it on the loop's thread, in a callback).
void CVoiceMeterShims_event_loop_break(void *loop);

/// Frees the loop (after the lws context using it was destroyed).
void CVoiceMeterShims_event_loop_destroy(void *loop);

#endif
