/* Error messages, generated from CP_ERROR_MAP. */
#include "proxy_error.h"

const char *cp_strerror(int rv)
{
    switch (rv) {
        case CP_OK:
            return "success";
#define CP__ERROR_MSG(name, code, msg) \
    case name:                         \
        return msg;
            CP_ERROR_MAP(CP__ERROR_MSG)
#undef CP__ERROR_MSG
        default:
            return "unknown error";
    }
}
