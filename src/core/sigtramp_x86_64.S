/*
 * src/core/sigtramp_x86_64.S - where a fault resumes after keel's handler.
 *
 * The SIGSEGV/SIGBUS/SIGFPE handler does not jump out of signal context.
 * Like Go's sigpanic, it rewrites the saved context so that, when the kernel
 * returns from the handler (restoring the signal mask on the way), the
 * thread continues here, and this calls keel__sigpanic() to raise an
 * ordinary panic.
 *
 * The handler leaves two words at the 16-byte aligned stack pointer it gives
 * this trampoline:
 *     [rsp + 0]  the return address unwinders should see (the faulting pc)
 *     [rsp + 8]  the stack pointer of the faulting frame (its caller's CFA)
 * The CFI below says exactly that, so backtrace() and the crash report walk
 * from the panic through this frame into the faulting function and beyond,
 * even when the trampoline runs on the alternate stack after an overflow.
 * The frame is marked as a signal frame: the faulting pc is not a return
 * address, and unwinders must not subtract one from it.
 */
	.text
	.globl	keel__sigtramp
	.hidden	keel__sigtramp
	.type	keel__sigtramp, @function
	.p2align 4
keel__sigtramp:
	.cfi_startproc simple
	.cfi_signal_frame
	/* DW_CFA_def_cfa_expression: CFA = *(rsp + 8) */
	.cfi_escape 0x0f, 0x03, 0x77, 0x08, 0x06
	/* DW_CFA_expression: return address (column 16) saved at rsp + 0 */
	.cfi_escape 0x10, 0x10, 0x02, 0x77, 0x00
	nop	/* unwinders look up pc - 1 for the frames above this one */
	call	keel__sigpanic
	ud2
	.cfi_endproc
	.size	keel__sigtramp, .-keel__sigtramp

	.section .note.GNU-stack,"",@progbits
