// libwebsockets 4.1.6 from Debian's libwebsockets-dev (pkg-config: libwebsockets).
#include <libwebsockets.h>
