# probe.efi: a tiny UEFI application for the harness's firmware-level boot tests
# (tests/it/harness_keys.rs assembles it with `as`, takes .text with `objcopy -O binary`
# and wraps it in a PE32+ header; all addressing is RIP-relative, so no relocations).
#
# It prints, on the firmware console (the serial port):
#   probe: tpm2 present | probe: no tpm2          (EFI_TCG2_PROTOCOL located or not)
#   probe: not started from a block device        (network boot: no BlockIo, or iPXE's
#                                                  with 1-byte blocks; then it powers off)
#   probe: block size N                           (its own drive's logical block size)
# then reads the drive's last block: without the marker "SLIPWAY!" it writes it and
# reboots (a guest-initiated reset); with it, it says so and powers off.
# UEFI: https://uefi.org/specs/UEFI/2.10/ (x64 calling convention: rcx, rdx, r8, r9,
# then the stack above 32 bytes of shadow space; the stack 16-byte aligned at each call).

        .intel_syntax noprefix
        .text
        .globl efi_main
efi_main:
        push rbx
        push rsi
        push rdi
        push r12
        push r13
        push r14
        push r15
        sub rsp, 0x70                 # 7 pushes + 0x70: aligned; locals at 0x30..0x50
        mov r12, rcx                  # ImageHandle
        mov r13, rdx                  # SystemTable
        mov rbx, [r13 + 96]           # BootServices

        lea rdx, [rip + msg_hello]
        call print

        # LocateProtocol(&EFI_TCG2_PROTOCOL_GUID, NULL, &iface)
        lea rcx, [rip + guid_tcg2]
        xor edx, edx
        lea r8, [rsp + 0x30]
        call [rbx + 320]
        lea rdx, [rip + msg_tpm_yes]
        test rax, rax
        jz 1f
        lea rdx, [rip + msg_tpm_no]
1:      call print

        # HandleProtocol(ImageHandle, &LOADED_IMAGE, &li); li->DeviceHandle
        mov rcx, r12
        lea rdx, [rip + guid_loaded_image]
        lea r8, [rsp + 0x38]
        call [rbx + 152]
        test rax, rax
        jnz no_disk
        mov rax, [rsp + 0x38]
        mov rcx, [rax + 24]
        # HandleProtocol(DeviceHandle, &BLOCK_IO, &bio)
        lea rdx, [rip + guid_block_io]
        lea r8, [rsp + 0x40]
        call [rbx + 152]
        test rax, rax
        jnz no_disk
        mov r14, [rsp + 0x40]         # BlockIo
        mov r15, [r14 + 8]            # Media
        # iPXE gives a network-booted image's handle a BlockIo with 1-byte blocks.
        cmp dword ptr [r15 + 12], 512
        jb no_disk

        lea rdx, [rip + msg_block_size]
        call print
        mov eax, [r15 + 12]           # Media->BlockSize
        call print_number
        lea rdx, [rip + msg_newline]
        call print

        # AllocatePool(EfiBootServicesData, BlockSize, &buf)
        mov ecx, 4
        mov edx, [r15 + 12]
        lea r8, [rsp + 0x48]
        call [rbx + 64]
        test rax, rax
        jnz fail
        # ReadBlocks(bio, MediaId, LastBlock, BlockSize, buf)
        mov rcx, r14
        mov edx, [r15]
        mov r8, [r15 + 24]
        mov r9d, [r15 + 12]
        mov rax, [rsp + 0x48]
        mov [rsp + 0x20], rax
        call [r14 + 24]
        test rax, rax
        jnz fail
        mov rsi, [rsp + 0x48]
        mov rax, [rip + marker]
        cmp [rsi], rax
        je second_boot

        mov [rsi], rax
        # WriteBlocks(bio, MediaId, LastBlock, BlockSize, buf); FlushBlocks(bio)
        mov rcx, r14
        mov edx, [r15]
        mov r8, [r15 + 24]
        mov r9d, [r15 + 12]
        mov [rsp + 0x20], rsi
        call [r14 + 32]
        test rax, rax
        jnz fail
        mov rcx, r14
        call [r14 + 40]
        lea rdx, [rip + msg_rebooting]
        call print
        xor ecx, ecx                  # EfiResetCold
        jmp reset

second_boot:
        lea rdx, [rip + msg_marker]
        call print
        mov ecx, 2                    # EfiResetShutdown
        jmp reset

no_disk:
        lea rdx, [rip + msg_no_disk]
        call print
        mov ecx, 2
        jmp reset

fail:
        lea rdx, [rip + msg_fail]
        call print
        mov ecx, 2

reset:  # RuntimeServices->ResetSystem(type, EFI_SUCCESS, 0, NULL)
        mov rax, [r13 + 88]
        xor edx, edx
        xor r8d, r8d
        xor r9d, r9d
        call [rax + 104]
        add rsp, 0x70
        pop r15
        pop r14
        pop r13
        pop r12
        pop rdi
        pop rsi
        pop rbx
        xor eax, eax
        ret

# print: the NUL-terminated ASCII text at rdx through ConOut->OutputString, widened to
# UTF-16 on the stack (at most 64 characters). Each call site has the stack aligned as in
# efi_main; the call pushes 8 bytes and these subs keep the next call aligned.
print:
        sub rsp, 0xa8
        lea rdi, [rsp + 0x20]
3:      movzx eax, byte ptr [rdx]
        mov [rdi], ax
        add rdx, 1
        add rdi, 2
        test eax, eax
        jnz 3b
        mov rcx, [r13 + 64]
        lea rdx, [rsp + 0x20]
        call [rcx + 8]
        add rsp, 0xa8
        ret

# print_number: eax in decimal.
print_number:
        sub rsp, 0x38
        lea rdi, [rsp + 0x37]
        mov byte ptr [rdi], 0
        mov ecx, 10
2:      xor edx, edx
        div ecx
        add edx, '0'
        sub rdi, 1
        mov [rdi], dl
        test eax, eax
        jnz 2b
        mov rdx, rdi
        call print
        add rsp, 0x38
        ret

        .p2align 3
marker: .ascii "SLIPWAY!"
guid_tcg2:                          # 607f766c-7455-42be-930b-e4d76db2720f
        .long 0x607f766c
        .short 0x7455, 0x42be
        .byte 0x93, 0x0b, 0xe4, 0xd7, 0x6d, 0xb2, 0x72, 0x0f
guid_loaded_image:                  # 5b1b31a1-9562-11d2-8e3f-00a0c969723b
        .long 0x5b1b31a1
        .short 0x9562, 0x11d2
        .byte 0x8e, 0x3f, 0x00, 0xa0, 0xc9, 0x69, 0x72, 0x3b
guid_block_io:                      # 964e5b21-6459-11d2-8e39-00a0c969723b
        .long 0x964e5b21
        .short 0x6459, 0x11d2
        .byte 0x8e, 0x39, 0x00, 0xa0, 0xc9, 0x69, 0x72, 0x3b

msg_hello:      .asciz "\r\nprobe: started\r\n"
msg_tpm_yes:    .asciz "probe: tpm2 present\r\n"
msg_tpm_no:     .asciz "probe: no tpm2\r\n"
msg_no_disk:    .asciz "probe: not started from a block device\r\n"
msg_block_size: .asciz "probe: block size "
msg_newline:    .asciz "\r\n"
msg_rebooting:  .asciz "probe: marker written; rebooting\r\n"
msg_marker:     .asciz "probe: the marker is there; powering off\r\n"
msg_fail:       .asciz "probe: a block I/O call failed\r\n"
