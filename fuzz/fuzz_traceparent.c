/*
 * fuzz/fuzz_traceparent.c - keel_traceparent_parse on any bytes: it must
 * never read outside the input, and what it accepts must format back to a
 * header that parses to the same context (for version 00, the same text).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <keel/trace.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct keel_trace t, again;
	char text[KEEL_TRACEPARENT_LEN + 1];
	/* An exact-size copy, so ASan sees any read past the end. */
	char *buf = malloc(size ? size : 1);

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	memset(&t, 0xa5, sizeof(t));
	if (keel_traceparent_parse(buf, size, &t) == 0) {
		if (!keel_trace_valid(&t))
			abort();
		keel_traceparent_format(&t, text);
		if (keel_traceparent_parse(text, KEEL_TRACEPARENT_LEN, &again) != 0 ||
		    memcmp(&t, &again, sizeof(t)) != 0)
			abort();
	}
	free(buf);
	return 0;
}
