;; One page of linear memory (64 KiB = 65,536 bytes) and two loads from an address.
;; Every wasm load is checked against the size of memory: a byte at 65,535 is the last one
;; there is, and a load that reaches past it traps ("out of bounds memory access").
(module
  (memory (export "memory") 1)
  (func (export "load_u8") (param $addr i32) (result i32)
    (i32.load8_u (local.get $addr)))
  (func (export "load_u32") (param $addr i32) (result i32)
    (i32.load (local.get $addr))))
