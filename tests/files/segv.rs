// A program that dies of a real segmentation fault (a write to address 0), so that the
// kernel logs "segfault at 0" as it does for any crashing program: the kola-strict
// self-test in tests/it/testing_harness.rs runs it in a booted image. Built by the test
// with `rustc -C target-feature=+crt-static` (static: the image's libc is not needed).
fn main() {
    let p: *mut u8 = std::hint::black_box(std::ptr::null_mut());
    // SAFETY: none; the fault is the point of this program.
    unsafe { p.write_volatile(1) };
}
