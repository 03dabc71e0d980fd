#include "CVoiceMeterShims.h"
#include <libwebsockets.h>

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
