// OpenSSL 3 from Debian's libssl-dev (pkg-config: openssl).
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
