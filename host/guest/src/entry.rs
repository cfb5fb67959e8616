//! The two boot entries and the switch to the guest's own 64-bit environment.
//!
//! Both entries zero `.bss`, build an identity map of the first 4 GiB with 2 MiB pages, enable
//! SSE (Rust code may use it), load the guest's own GDT and stack, and call
//! `guest_main(entry_kind, boot_info_address)`:
//! - `linux64_entry` (ELF `e_entry`): 64-bit Linux boot protocol, long mode with paging on,
//!   `RSI` = `boot_params`; `entry_kind` = 0.
//! - `pvh_entry` (Xen note `XEN_ELFNOTE_PHYS32_ENTRY`): 32-bit protected mode, paging off,
//!   `EBX` = `hvm_start_info`; `entry_kind` = 1.

use core::arch::global_asm;

global_asm!(
    r#"
    .set CR0_PE,  1 << 0
    .set CR0_MP,  1 << 1
    .set CR0_EM,  1 << 2
    .set CR0_NE,  1 << 5
    .set CR0_PG,  1 << 31
    .set CR4_PAE, 1 << 5
    .set CR4_OSFXSR, 1 << 9
    .set CR4_OSXMMEXCPT, 1 << 10
    .set MSR_EFER, 0xc0000080
    .set EFER_LME, 1 << 8
    .set PTE_PRESENT_RW, 0x3
    .set PDE_2M, 0x83
    .set SEL_CODE64, 0x08
    .set SEL_DATA, 0x10

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
    cli
    cld
    movl %ebx, %esi

    /* zero .bss (Rust statics) and the PML4 and PDPT; the PDs are filled entirely below */
    xorl %eax, %eax
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    rep stosl
    movl $pml4, %edi
    movl $2 * 4096 / 4, %ecx
    rep stosl

    /* PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3; PD entries map 4 GiB with 2 MiB pages */
    movl $pdpt + PTE_PRESENT_RW, pml4
    movl $pd + PTE_PRESENT_RW, pdpt
    movl $pd + 0x1000 + PTE_PRESENT_RW, pdpt + 8
    movl $pd + 0x2000 + PTE_PRESENT_RW, pdpt + 16
    movl $pd + 0x3000 + PTE_PRESENT_RW, pdpt + 24
    movl $pd, %edi
    movl $PDE_2M, %eax
    movl $2048, %ecx
1:
    movl %eax, (%edi)
    movl $0, 4(%edi)
    addl $0x200000, %eax
    addl $8, %edi
    decl %ecx
    jnz 1b

    movl %cr4, %eax
    orl $CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT, %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl %cr0, %eax
    andl $~CR0_EM, %eax
    orl $CR0_PG | CR0_NE | CR0_MP | CR0_PE, %eax
    movl %eax, %cr0
    lgdt gdt_ptr
    ljmp $SEL_CODE64, $pvh_long_mode

    .code64
pvh_long_mode:
    movl $SEL_DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    movq $stack_top, %rsp
    movl %esi, %esi
    movl $1, %edi
    call guest_main
    jmp park

    /* ---- 64-bit Linux boot protocol entry: long mode, RSI = boot_params ---- */
    .globl linux64_entry
linux64_entry:
    cli
    cld
    movq %rsi, %r12

    xorl %eax, %eax
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $3, %ecx
    rep stosq
    movl $pml4, %edi
    movl $2 * 4096 / 8, %ecx
    rep stosq

    movq $stack_top, %rsp

    movl $pdpt + PTE_PRESENT_RW, pml4
    movl $pd + PTE_PRESENT_RW, pdpt
    movl $pd + 0x1000 + PTE_PRESENT_RW, pdpt + 8
    movl $pd + 0x2000 + PTE_PRESENT_RW, pdpt + 16
    movl $pd + 0x3000 + PTE_PRESENT_RW, pdpt + 24
    movl $pd, %edi
    movl $PDE_2M, %eax
    movl $2048, %ecx
1:
    movq %rax, (%rdi)
    addq $0x200000, %rax
    addq $8, %rdi
    decl %ecx
    jnz 1b

    movq %cr4, %rax
    orq $CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT, %rax
    movq %rax, %cr4
    movq %cr0, %rax
    andq $~CR0_EM, %rax
    orq $CR0_NE | CR0_MP, %rax
    movq %rax, %cr0
    movl $pml4, %eax
    movq %rax, %cr3
    lgdt gdt_ptr
    pushq $SEL_CODE64
    leaq 2f(%rip), %rax
    pushq %rax
    lretq
2:
    movl $SEL_DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    movq $stack_top, %rsp
    movq %r12, %rsi
    xorl %edi, %edi
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

    .section .rodata.gdt, "a", @progbits
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

    .section .bss.boot, "aw", @nobits
    .balign 4096
pml4:
    .skip 4096
pdpt:
    .skip 4096
pd:
    .skip 4 * 4096
stack_bottom:
    .skip 16384
stack_top:

    .text
"#,
    options(att_syntax)
);
