// Out-of-line pieces of the base layer, so that msgsim_impl always has an object to link.
#include "impl/runtime.h"
#include "impl/base/result.h"
