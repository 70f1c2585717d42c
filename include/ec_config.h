/*
 * ec_config.h - ecshard's base header: version, common system headers, export macros.
 *
 * Momentum code includes "ec_config.h" first in every file; the seed's samples do too and
 * then use errno, strerror, memcpy, calloc/free, ioctl and socket without including the
 * system headers themselves. This header pulls those in so that such code compiles as
 * written.
 */
#ifndef EC_CONFIG_H
#define EC_CONFIG_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define ECSHARD_VERSION_MAJOR  0
#define ECSHARD_VERSION_MINOR  1
#define ECSHARD_VERSION_PATCH  0
#define ECSHARD_VERSION_STRING "0.1.0"

/* Symbols of the public API; everything else in the library is hidden. */
#if defined(__GNUC__)
#define EC_API                    __attribute__((visibility("default")))
#define EC_PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define EC_API
#define EC_PRINTF_LIKE(fmt, args)
#endif

#endif /* EC_CONFIG_H */
