/* Error names and messages, generated from CR_ERROR_MAP. */
#include "craft/error.h"

const char *cr_strerror(int rv)
{
    switch (rv) {
        case CR_OK:
            return "success";
#define CR__ERROR_MSG(name, code, msg) \
    case name:                         \
        return msg;
            CR_ERROR_MAP(CR__ERROR_MSG)
#undef CR__ERROR_MSG
        default:
            return "unknown error";
    }
}

const char *cr_errname(int rv)
{
    switch (rv) {
        case CR_OK:
            return "CR_OK";
#define CR__ERROR_NAME(name, code, msg) \
    case name:                          \
        return #name;
            CR_ERROR_MAP(CR__ERROR_NAME)
#undef CR__ERROR_NAME
        default:
            return "CR_EUNKNOWN";
    }
}
