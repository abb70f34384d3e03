;; A *trusting* build of the article's ABI, written by hand: no Rust, no checks.
;;
;; alloc(len)          a bump allocator: 8-aligned blocks one after the other, growing
;;                     memory when a block does not fit; returns 0 when memory cannot grow
;; infer_from_ptrs(model_ptr, model_len, img_ptr, img_len)
;;                     the article's signature; it believes both lengths, reads every byte
;;                     of both ranges and returns the Adler-32 checksum of the "image" bytes
;;                     (zlib.adler32 in Python computes the same), so the host can tell
;;                     exactly which bytes it read
;; jpeg_end(ptr, len)  what a JPEG decoder does with a range: it reads up to the end marker
;;                     FF D9 and stops; returns the bytes that took, or -1 without a marker
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))

  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (i32.and (i32.add (global.get $next) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        ;; grow by the pages the block needs past the current end of memory
        (if (i32.eq (memory.grow
                      (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535))
                                          (i32.const 16))
                               (memory.size)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $next (local.get $end))
    (local.get $ptr))

  (func $adler32 (export "adler32") (param $ptr i32) (param $len i32) (result i64)
    (local $a i32) (local $b i32) (local $end i32)
    (local.set $a (i32.const 1))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $byte
        (br_if $done (i32.ge_u (local.get $ptr) (local.get $end)))
        (local.set $a (i32.rem_u (i32.add (local.get $a) (i32.load8_u (local.get $ptr)))
                                 (i32.const 65521)))
        (local.set $b (i32.rem_u (i32.add (local.get $b) (local.get $a)) (i32.const 65521)))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (br $byte)))
    (i64.extend_i32_u (i32.or (i32.shl (local.get $b) (i32.const 16)) (local.get $a))))

  (func (export "infer_from_ptrs")
        (param $model_ptr i32) (param $model_len i32) (param $img_ptr i32) (param $img_len i32)
        (result i64)
    (drop (call $adler32 (local.get $model_ptr) (local.get $model_len)))
    (call $adler32 (local.get $img_ptr) (local.get $img_len)))

  (func (export "jpeg_end") (param $ptr i32) (param $len i32) (result i32)
    (local $i i32)
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (i32.add (local.get $i) (i32.const 1)) (local.get $len)))
        (if (i32.and
              (i32.eq (i32.load8_u (i32.add (local.get $ptr) (local.get $i))) (i32.const 0xff))
              (i32.eq (i32.load8_u offset=1 (i32.add (local.get $ptr) (local.get $i)))
                      (i32.const 0xd9)))
          (then (return (i32.add (local.get $i) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (i32.const -1)))
