//! Arbitrary bytes as every kind of signed statement: never a panic, and whatever decodes is
//! canonical (its envelope is exactly the input).
#![no_main]

use kho::statement::{
    CertificateRevocation, CopyCertification, KeyCertificate, SignatureValidation, Receipt, Record, RecordRevocation, Signed, StatementBody,
    VaultKeyCertificate,
};
use libfuzzer_sys::fuzz_target;

fn check<T: StatementBody>(data: &[u8]) {
    if let Ok(statement) = Signed::<T>::from_envelope(data) {
        assert_eq!(statement.to_envelope(), data, "a decoded {} is not canonical", T::NAME);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Record>(data);
    check::<RecordRevocation>(data);
    check::<KeyCertificate>(data);
    check::<VaultKeyCertificate>(data);
    check::<CertificateRevocation>(data);
    check::<Receipt>(data);
    check::<CopyCertification>(data);
    check::<SignatureValidation>(data);
    let _ = kho::statement::peek_kind(data);
});
