#include "CVoiceMeterShims.h"
#include <libwebsockets.h>
#include <ev.h>
#include <stdlib.h>

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

struct CVoiceMeterShims_heartbeat {
    ev_timer timer;  // first member: the callback's timer pointer is the heartbeat
    struct lws_context *context;
};

static void CVoiceMeterShims_heartbeat_fired(struct ev_loop *loop, ev_timer *timer, int events) {
    (void)loop;
    (void)events;
    lws_cancel_service(((struct CVoiceMeterShims_heartbeat *)timer)->context);
}

void *CVoiceMeterShims_event_loop_start_heartbeat(void *loop, struct lws_context *context, double seconds) {
    struct CVoiceMeterShims_heartbeat *heartbeat = calloc(1, sizeof *heartbeat);
    if (heartbeat == NULL) {
        return NULL;
    }
    heartbeat->context = context;
    ev_timer_init(&heartbeat->timer, CVoiceMeterShims_heartbeat_fired, seconds, seconds);
    ev_timer_start((struct ev_loop *)loop, &heartbeat->timer);
    return heartbeat;
}

void CVoiceMeterShims_event_loop_stop_heartbeat(void *loop, void *heartbeat) {
    if (heartbeat == NULL) {
        return;
    }
    ev_timer_stop((struct ev_loop *)loop, &((struct CVoiceMeterShims_heartbeat *)heartbeat)->timer);
    free(heartbeat);
}
