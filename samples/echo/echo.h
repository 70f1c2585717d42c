/*
 * samples/echo/echo.h - the echo protocol module: sends back whatever it receives.
 */
#ifndef EC_SAMPLE_ECHO_H
#define EC_SAMPLE_ECHO_H

/* Registers protocol "echo" (ec_protocol_register). 0 or a negative errno. */
int echo_register(void);

#endif
