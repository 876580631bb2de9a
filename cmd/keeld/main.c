/*
 * cmd/keeld/main.c - keeld, the scheduler daemon (docs/keeld.md).
 */
#include "keeld.h"

int main(int argc, char **argv)
{
	return keeld_main(argc, argv, NULL, NULL);
}
