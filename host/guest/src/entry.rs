//! The two boot entries and the switch to the guest's own 64-bit environment.
//!
//! Under KVM-PVM every guest instruction is emulated, so the entries do as little as possible:
//! - each prints the first console line (`SAKSHI-TEST-GUEST v1 entry=<kind>`) from its own image
//!   with one `rep outsb`, before anything else;
//! - the identity map of the first 4 GiB (2 MiB pages) is prebuilt data in the ELF
//!   (`.pagetables`, file-backed, so the loader copies it): the entries only load CR3;
//! - nothing is zeroed at run time: the guest's Rust statics are file-backed too (see
//!   `linker.ld`), and the stack needs no initial contents.
//!
//! Then they load the guest's own GDT, segments and stack and call
//! `guest_main(entry_kind, boot_info_address)`:
//! - `linux64_entry` (ELF `e_entry`): 64-bit Linux boot protocol, long mode with paging on,
//!   `RSI` = `boot_params`; `entry_kind` = 0.
//! - `pvh_entry` (Xen note `XEN_ELFNOTE_PHYS32_ENTRY`): 32-bit protected mode, paging off,
//!   `EBX` = `hvm_start_info`; `entry_kind` = 1.
//!
//! SSE stays off (CR4.OSFXSR is not set): the guest is built without SSE because the PVM
//! instruction emulator lacks it.

use core::arch::global_asm;

global_asm!(
    r#"
    .set CR0_PE,  1 << 0
    .set CR0_ET,  1 << 4
    .set CR0_NE,  1 << 5
    .set CR0_PG,  1 << 31
    .set CR4_PAE, 1 << 5
    .set MSR_EFER, 0xc0000080
    .set EFER_LME, 1 << 8
    .set PTE_PRESENT_RW, 0x3
    .set PDE_2M, 0x83
    .set SEL_CODE64, 0x08
    .set SEL_DATA, 0x10
    .set COM1_THR, 0x3f8

    /* XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen", 8-byte descriptor (QEMU reads a
     * pointer-sized value, linux-loader the low 32 bits). */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_entry

    .section .text.entry, "ax", @progbits

    /* ---- 32-bit PVH entry: protected mode, paging off, EBX = hvm_start_info ---- */
    .code32
    .globl pvh_entry
pvh_entry:
    cld
    movl $banner_pvh, %esi
    movl $banner_pvh_end - banner_pvh, %ecx
    movw $COM1_THR, %dx
    rep outsb

    movl $CR4_PAE, %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl $CR0_PG | CR0_NE | CR0_ET | CR0_PE, %eax
    movl %eax, %cr0
    lgdt gdt_ptr
    ljmp $SEL_CODE64, $pvh_long_mode

    .code64
pvh_long_mode:
    movl %ebx, %esi
    movl $1, %edi
    jmp common_64

    /* ---- 64-bit Linux boot protocol entry: long mode, RSI = boot_params ---- */
    .globl linux64_entry
linux64_entry:
    cld
    movq %rsi, %rbx
    movl $banner_linux64, %esi
    movl $banner_linux64_end - banner_linux64, %ecx
    movw $COM1_THR, %dx
    rep outsb

    movl $pml4, %eax
    movq %rax, %cr3
    lgdt gdt_ptr
    movq %rbx, %rsi
    xorl %edi, %edi
    pushq $SEL_CODE64
    pushq $common_64
    lretq

    /* Both entries: CS = the guest's 64-bit code segment, ESI/RSI = boot information,
     * EDI = entry kind. */
common_64:
    cli
    movl $SEL_DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    movl $stack_top, %esp
    call guest_main

park:
    cli
    hlt
    jmp park

    /* The precompiled `core` (built for unwinding) references this symbol from its unwind
     * tables. The guest is built with panic=abort and never unwinds, so it is never called. */
    .globl rust_eh_personality
rust_eh_personality:
    ud2

    .section .rodata.entry, "a", @progbits
banner_pvh:
    .ascii "SAKSHI-TEST-GUEST v1 entry=pvh\n"
banner_pvh_end:
banner_linux64:
    .ascii "SAKSHI-TEST-GUEST v1 entry=linux64\n"
banner_linux64_end:

    .balign 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
gdt_end:
    .balign 8
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

    /* The identity map of the first 4 GiB with 2 MiB pages, complete at link time. */
    .section .pagetables, "aw", @progbits
    .balign 4096
pml4:
    .quad pdpt + PTE_PRESENT_RW
    .fill 511, 8, 0
pdpt:
    .quad pd + PTE_PRESENT_RW
    .quad pd + 0x1000 + PTE_PRESENT_RW
    .quad pd + 0x2000 + PTE_PRESENT_RW
    .quad pd + 0x3000 + PTE_PRESENT_RW
    .fill 508, 8, 0
pd:
    .set pde, PDE_2M
    .rept 4 * 512
    .quad pde
    .set pde, pde + 0x200000
    .endr

    .section .guest_stack, "aw", @nobits
    .balign 16
    .skip 16384
stack_top:

    .text
"#,
    options(att_syntax)
);
