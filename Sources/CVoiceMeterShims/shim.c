#include "CVoiceMeterShims.h"
#include <libwebsockets.h>
#include <ev.h>

// Outbound buffers are sized with this value; lws 4.1.6 defines it as 16 on 64-bit Linux.
_Static_assert(LWS_PRE >= 16, "LWS_PRE is smaller than libwebsockets 4.x guarantees");

size_t CVoiceMeterShims_LWS_PRE(void) {
    return LWS_PRE;
}

int CVoiceMeterShims_harden_tls_context(SSL_CTX *context) {
    if (SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION) != 1) {
        return 0;
    }
    SSL_CTX_set_options(context, SSL_OP_NO_COMPRESSION);
    return 1;
}

long CVoiceMeterShims_tls_legacy_protocol_options(void) {
    return (long)(SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_COMPRESSION);
}

void *CVoiceMeterShims_event_loop_create(void) {
    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL);
    if (loop != NULL && ev_backend(loop) != EVBACKEND_EPOLL) {
        ev_loop_destroy(loop);
        return NULL;
    }
    return loop;
}

void CVoiceMeterShims_event_loop_run(void *loop) {
    ev_run((struct ev_loop *)loop, 0);
}

void CVoiceMeterShims_event_loop_break(void *loop) {
    ev_break((struct ev_loop *)loop, EVBREAK_ALL);
}

void CVoiceMeterShims_event_loop_destroy(void *loop) {
    ev_loop_destroy((struct ev_loop *)loop);
}


static const lws_retry_bo_t CVoiceMeterShims_zero_policy;

const lws_retry_bo_t *CVoiceMeterShims_no_validity_timers(void) {
    return &CVoiceMeterShims_zero_policy;
}
